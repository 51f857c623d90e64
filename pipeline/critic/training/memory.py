"""How much memory one rank of a critic SFT run needs, estimated before it starts (printed by rank 0).

Arithmetic on the checkpoint's config.json and the run's settings, no model loaded:
  * weights, gradients and Adam states per rank under the ZeRO stage (bf16 weights with an fp32 master copy
    when `deepspeed.bf16`, else fp32 everything), sharded over the ranks as the stage says;
  * activations of one micro-batch: with gradient checkpointing, each layer's input is kept (seq × hidden) plus
    one layer recomputed at a time (attention and MLP intermediates); without it, every layer's intermediates;
    the vision tower likewise on the image patches;
  * the loss: logits only for the answer tokens (fp32), not the whole sequence × vocabulary.
An estimate, not a measurement: allocator fragmentation, NCCL buffers and the CUDA context (~1-3 GB) come on
top. Its point is the order of magnitude and what moves it (micro-batch, image side, checkpointing, ZeRO stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024 ** 3


@dataclass(frozen=True)
class SFTShape:
    """What one example looks like to the model."""

    images: int = 2  # reference and rendering
    image_side: int = 1024
    prompt_tokens: int = 900  # instructions and captions, without the image tokens
    answer_tokens: int = 1024


def _text_params(t: dict[str, Any]) -> int:
    h, layers, inter, vocab = t["hidden_size"], t["num_hidden_layers"], t["intermediate_size"], t["vocab_size"]
    heads, kv = t["num_attention_heads"], t.get("num_key_value_heads", t["num_attention_heads"])
    head_dim = t.get("head_dim") or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o and k, v
    mlp = 3 * h * inter
    embeddings = vocab * h * (1 if t.get("tie_word_embeddings") else 2)
    return layers * (attn + mlp) + embeddings


def _vision_params(v: dict[str, Any]) -> int:
    h, depth, inter = v["hidden_size"], v["depth"], v["intermediate_size"]
    return depth * (4 * h * h + 2 * h * inter)


def estimate(hf_config: dict[str, Any], zero_stage: int, ranks: int, micro_batch_size: int, bf16: bool,
             gradient_checkpointing: bool, shape: SFTShape = SFTShape()) -> dict[str, float]:
    """GiB per rank, by part, and the total."""
    t, v = hf_config["text_config"], hf_config["vision_config"]
    params = _text_params(t) + _vision_params(v)
    weight_bytes = 2 if bf16 else 4
    # fp32 master + Adam m, v (12 bytes) with bf16; Adam m, v (8 bytes) on fp32 weights.
    optimizer_bytes = 12 if bf16 else 8

    def shard(stage_from: int) -> int:  # ZeRO-1 shards the optimizer states, ZeRO-2 the gradients, ZeRO-3 weights
        return ranks if zero_stage >= stage_from else 1

    out = {
        "params_billion": params / 1e9,
        "weights": params * weight_bytes / shard(3) / GIB,
        "gradients": params * weight_bytes / shard(2) / GIB,
        "optimizer": params * optimizer_bytes / shard(1) / GIB,
    }
    patch = v.get("patch_size", 16) * v.get("spatial_merge_size", 2)
    image_tokens = (shape.image_side // patch) ** 2
    patches = image_tokens * v.get("spatial_merge_size", 2) ** 2
    seq = shape.images * image_tokens + shape.prompt_tokens + shape.answer_tokens
    b, act = micro_batch_size, 2 if bf16 else 4
    h, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    per_layer = seq * (10 * h + 3 * inter) * act  # attention in/out, norms, q/k/v/o, MLP gate/up/down
    vh, vinter, vdepth = v["hidden_size"], v["intermediate_size"], v["depth"]
    per_vision_layer = shape.images * patches * (10 * vh + 2 * vinter) * act
    if gradient_checkpointing:  # layer inputs kept, one layer's intermediates live during its recompute
        text = layers * seq * h * act + per_layer
        vision = vdepth * shape.images * patches * vh * act + per_vision_layer
    else:
        text, vision = layers * per_layer, vdepth * per_vision_layer
    out["activations"] = b * (text + vision) / GIB
    out["answer_logits"] = b * shape.answer_tokens * t["vocab_size"] * 4 * 2 / GIB  # fp32 logits and their grad
    out["sequence_tokens"] = float(seq)
    out["total"] = sum(out[k] for k in ("weights", "gradients", "optimizer", "activations", "answer_logits"))
    return out


def format_estimate(est: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {est[k]:.1f}" for k in ("weights", "gradients", "optimizer", "activations", "answer_logits"))
    return (f"critic SFT memory per rank ≈ {est['total']:.1f} GiB ({parts}; {est['params_billion']:.2f} B params, "
            f"{est['sequence_tokens']:.0f} tokens per example) + CUDA context and allocator slack")
