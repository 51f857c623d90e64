"""The rollout interface and the bookkeeping every backend shares.

A backend turns prompts (Samples carrying chat messages and a reference image) into `n` sampled responses per
prompt. Whatever generates the tokens (transformers `generate`, vLLM), the Samples that come out are built by
the same functions here, so both backends agree on:

- the prompt: the processor's chat template text, one RGB PIL image per image part (the reference, then a
  revision turn's feedback rendering);
- the group: n fresh copies per prompt (new uid, unshared mutable fields), prompt-major order;
- stopping: a response ends at the first stop token (the generation config's eos ids), which is kept;
  whatever was generated after it (padding) is dropped;
- log-probs: one per response token, of the sampled token under softmax(logits / T) at the sampling temperature
  T, untruncated (greedy decoding reports T = 1): what the trainer recomputes (verl divides by T too);
- text: the response tokens decoded with special tokens skipped;
- the policy version that produced the response.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from pipeline.rollout.config import SamplingConfig
from pipeline.sample import Sample

VLLM_MISSING = "rollout.backend=vllm needs the vllm extra: pip install .[gpu] (vllm) on a GPU machine"


class RolloutUnavailable(RuntimeError):
    """The configured rollout backend cannot run here (its optional dependency or the hardware is missing)."""


@runtime_checkable
class Rollout(Protocol):
    """What a rollout worker needs from a backend."""

    version: int  # the policy version the current weights belong to

    def generate(self, prompts: list[Sample], n: int | None = None, greedy: bool = False) -> list[Sample]:
        """n new Samples per prompt (same prompt_id = one GRPO group), responses filled in."""
        ...

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Replace the policy's weights with a full HF-named state dict and adopt its version."""
        ...


# ---------------------------------------------------------------------------------------------------------
# Shared bookkeeping
# ---------------------------------------------------------------------------------------------------------
def expand_groups(prompts: Sequence[Sample], n: int) -> list[Sample]:
    """n fresh copies of each prompt, prompt-major. Group members never share a mutable field."""
    return [
        dataclasses.replace(p, uid=uuid.uuid4().hex, reward_breakdown={}, discrepancies=[], extra=dict(p.extra))
        for p in prompts
        for _ in range(n)
    ]


def prompt_text(processor: Any, sample: Sample) -> str:
    """The chat-templated prompt with the image placeholder, ready for generation."""
    return processor.apply_chat_template(sample.messages, add_generation_prompt=True, tokenize=False)


def prompt_images(sample: Sample) -> list[Image.Image]:
    """The prompt's images (reference, then a revision turn's feedback rendering), as the trainer's
    `encode_prompt` takes them: the processor converts to RGB, so both see the same pixels."""
    return [Image.fromarray(np.asarray(image, dtype=np.uint8)) for image in sample.prompt_images]


def logprob_temperature(sampling: SamplingConfig, greedy: bool) -> float:
    """The temperature the reported log-probs are taken at (1 for greedy decoding)."""
    return sampling.temperature if sampling.temperature > 0 and not greedy else 1.0


def is_sampling(sampling: SamplingConfig, greedy: bool) -> bool:
    return sampling.temperature > 0 and not greedy


def stop_token_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The ids that end a response: the generation config's eos id(s), else the tokenizer's eos."""
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the policy has no eos token (generation_config.json or tokenizer): responses never end")
    ids = [eos] if isinstance(eos, int) else list(eos)
    return [int(i) for i in ids]


# Qwen3-VL config fields naming the vision special tokens. A generated one would be read as an image
# placeholder by the training forward pass (image tokens without image features, shifted M-RoPE positions).
VISION_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
# `Sample.failure` reason of a response that contains one anyway (a counted policy failure: see fill_response).
VISION_TOKEN_FAILURE = "vision_token"


def vision_token_ids(hf_config: Any) -> set[int]:
    """The model's vision special tokens (`VISION_TOKEN_FIELDS` of its config; top level or text config)."""
    ids = set()
    for config in (hf_config, getattr(hf_config, "text_config", None)):
        for name in VISION_TOKEN_FIELDS:
            value = getattr(config, name, None) if config is not None else None
            if value is not None:
                ids.add(int(value))
    return ids


def never_sampled_token_ids(generation_config: Any, hf_config: Any = None) -> list[int]:
    """Tokens the policy must never emit, hard-blocked at sampling by every backend: the generation config's
    `suppress_tokens` and the model's vision special tokens (real checkpoints suppress none of them)."""
    suppress = getattr(generation_config, "suppress_tokens", None) if generation_config is not None else None
    return sorted({int(i) for i in suppress or []} | (vision_token_ids(hf_config) if hf_config is not None else set()))


def cut_at_stop(token_ids: Iterable[int], stop_ids: Sequence[int]) -> int:
    """Length of the response: up to and including the first stop token, else all of it."""
    stops = set(stop_ids)
    ids = list(token_ids)
    for j, t in enumerate(ids):
        if t in stops:
            return j + 1
    return len(ids)


def fill_response(
    sample: Sample,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    response_logprobs: Sequence[float],
    tokenizer: Any,
    stop_ids: Sequence[int],
    version: int,
    never_sampled: Collection[int] = (),
) -> Sample:
    """Write one generated response into its Sample: cut at the first stop token, decode, tag the version.
    A response holding a `never_sampled` token despite the sampling block is kept and marked as the policy's
    failure (`rollout:vision_token`, counted per step); the trainer masks it out (pipeline/training/batch.py)."""
    if len(response_logprobs) < len(response_ids):
        raise ValueError(
            f"sample {sample.uid}: {len(response_logprobs)} log-probs for {len(response_ids)} response tokens"
        )
    length = cut_at_stop(response_ids, stop_ids)
    ids = [int(t) for t in response_ids[:length]]
    sample.prompt_ids = [int(t) for t in prompt_ids]
    sample.response_ids = ids
    sample.response_logprobs = [float(lp) for lp in response_logprobs[:length]]
    sample.response_text = tokenizer.decode(ids, skip_special_tokens=True)
    sample.policy_version = version
    if never_sampled and not set(never_sampled).isdisjoint(ids):
        sample.fail("rollout", VISION_TOKEN_FAILURE)
    return sample


__all__ = [
    "VISION_TOKEN_FAILURE",
    "VLLM_MISSING",
    "Rollout",
    "RolloutUnavailable",
    "cut_at_stop",
    "expand_groups",
    "fill_response",
    "is_sampling",
    "logprob_temperature",
    "never_sampled_token_ids",
    "prompt_images",
    "prompt_text",
    "stop_token_ids",
    "vision_token_ids",
]
