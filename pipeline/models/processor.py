"""Qwen3-VL processor for images only.

transformers' stock Qwen3-VL processor insists on a video processor, and the video processor imports
torchvision — which must not be installed on CPU machines (its registry wheels are CUDA-linked). The policy and
the reward model only ever see images, so this processor simply has no video part. It loads the image settings
of a real checkpoint (preprocessor_config.json / processor_config.json) unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl import Qwen3VLProcessor


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    # ProcessorMixin derives its sub-processors from __init__'s parameters: listing no `video_processor`
    # removes the video part (and its torchvision import) entirely.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def load_processor(path: str | Path) -> Qwen3VLImageOnlyProcessor:
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    template_file = path / "chat_template.jinja"
    chat_template = template_file.read_text() if template_file.is_file() else tokenizer.chat_template
    return Qwen3VLImageOnlyProcessor(image_processor, tokenizer, chat_template=chat_template)


def collate(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of encoded (prompt + answer) examples for supervised training (the tiny policy's
    warm start, critic SFT); no generation follows, so the padding side does not matter."""
    length = max(e["input_ids"].shape[0] for e in encoded)

    def pad(key: str, value: int) -> torch.Tensor:
        out = torch.full((len(encoded), length), value, dtype=encoded[0][key].dtype)
        for i, e in enumerate(encoded):
            out[i, : e[key].shape[0]] = e[key]
        return out

    attention = torch.zeros(len(encoded), length, dtype=torch.long)
    for i, e in enumerate(encoded):
        attention[i, : e["input_ids"].shape[0]] = 1
    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", -100),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "attention_mask": attention,
        "pixel_values": torch.cat([e["pixel_values"] for e in encoded]),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in encoded]),
    }
