"""Tiny random Qwen3-VL models, built offline from a config in seconds (no hub, no downloads); a policy may
be warm-started by a short SFT on compact synthetic programs (`tiny.warm_start`, see warm_start.py).

The architecture is the real Qwen3-VL (vision tower with deepstack, M-RoPE text decoder), only narrow and
shallow, so every code path that a Qwen3-VL-8B run exercises — processor, generate, verl's forward — runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from transformers import GenerationConfig
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from pipeline.cache import build_once
from pipeline.models.config import TinyModelConfig
from pipeline.models.processor import Qwen3VLImageOnlyProcessor
from pipeline.tiny import tokenizer as tok
from pipeline.tiny.warm_start import warm_start


def tiny_qwen3_vl_config(cfg: TinyModelConfig, token_ids: dict[str, int], vocab_size: int) -> Qwen3VLConfig:
    text, vision = cfg.text, cfg.vision
    rotary_half = text.head_dim // 2
    # M-RoPE splits the rotary half-dimension over (time, height, width); Qwen3-VL-8B uses [24, 20, 20] of 64.
    h = w = rotary_half * 5 // 16
    mrope_section = [rotary_half - h - w, h, w]
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            max_position_embeddings=text.max_position_embeddings,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
            pad_token_id=token_ids[tok.PAD],
        ),
        vision_config=dict(
            depth=vision.depth,
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_heads=vision.num_heads,
            patch_size=vision.patch_size,
            spatial_merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
            out_hidden_size=text.hidden_size,
            num_position_embeddings=64,  # an 8×8 learned grid, interpolated for larger images
            deepstack_visual_indexes=list(range(min(vision.depth, 1))),
        ),
        image_token_id=token_ids[tok.IMAGE_PAD],
        video_token_id=token_ids[tok.VIDEO_PAD],
        vision_start_token_id=token_ids[tok.VISION_START],
        vision_end_token_id=token_ids[tok.VISION_END],
        tie_word_embeddings=False,
    )


def build_tiny_qwen3_vl(cfg: TinyModelConfig, out_dir: Path, corpus: Callable[[], Iterable[str]]) -> None:
    """Write a complete HF model directory (weights, config, tokenizer, processor) for a tiny Qwen3-VL."""
    tokenizer = tok.train_code_tokenizer(corpus(), vocab_size=cfg.vocab_size)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tok.SPECIAL_TOKENS}
    vision = cfg.vision
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
    )
    processor = Qwen3VLImageOnlyProcessor(image_processor, tokenizer, chat_template=tok.CHAT_TEMPLATE)

    model_config = tiny_qwen3_vl_config(cfg, token_ids, vocab_size=len(tokenizer))
    torch.manual_seed(cfg.seed)
    model = Qwen3VLForConditionalGeneration(model_config)
    # A random model would happily emit <|image_pad|> and friends, which then break the next forward pass
    # (they are read as image placeholders): never sample them.
    never_sample = [token_ids[t] for t in (tok.PAD, tok.IM_START, tok.VISION_START, tok.VISION_END,
                                           tok.IMAGE_PAD, tok.VIDEO_PAD)]
    model.generation_config = GenerationConfig(
        eos_token_id=token_ids[tok.IM_END],
        pad_token_id=token_ids[tok.PAD],
        suppress_tokens=never_sample,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    if cfg.warm_start.steps:
        warm_start(model, processor, cfg.warm_start, seed=cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_encoder(cache_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random DINOv2 vision encoder (the `embedding` reward's model, `reward.embedding.path`), built once
    in `cache_dir`. Random weights: a stand-in that exercises the embedding-similarity path offline; a real
    run points `reward.embedding.path` at a local DINOv2 checkpoint."""
    import os

    from transformers import (  # transformers is loaded already; kept local for the names
        Dinov2Config,
        Dinov2Model,
    )


    def build(scratch: Path) -> None:
        torch.manual_seed(seed)
        Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=112, patch_size=14)).save_pretrained(scratch)

    return build_once(Path(os.path.expanduser(str(cache_dir))) / f"tiny-dinov2-s{seed}", build,
                      lambda path: (path / "config.json").is_file())
