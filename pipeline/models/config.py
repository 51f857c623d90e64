"""The `models:` section: where the policy and the reward model come from — a local Hugging Face checkpoint
(`path`), or `path: tiny`, a tiny random Qwen3-VL that `pipeline.tiny.ensure_models` builds offline from
the `tiny:` settings below (and warm-starts or trains as they say) before anything loads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.sample import JudgementLimits
from pipeline.schema import Strict


class TinyVisionConfig(Strict):
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 64  # must equal the text hidden size


class TinyTextConfig(Strict):
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    max_position_embeddings: int = 4096


class TinyWarmStartConfig(Strict):
    """Supervised warm start of a tiny model at build time (pipeline/tiny/warm_start.py): teacher-forced
    SFT on compact synthetic (image, code) pairs, so a tiny policy renders some of its samples and GRPO groups
    carry a reward signal. steps: 0 keeps the plain random model (the tiny reward model's setting)."""

    steps: int = Field(0, ge=0)
    examples_per_task: int = Field(48, ge=1)  # compact programs rendered per task kind
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=1)
    # Revision examples (pipeline/tiny/warm_start.py): a targeted edit of a compact program is a free
    # (broken code, its rendering, exact discrepancies → correct code) revision turn; this many per task kind.
    revision_examples_per_task: int = Field(0, ge=0)


TINY_CRITIC_STEPS = 300  # the embedded default's tiny critic SFT steps (≈2 CPU-minutes; see pipeline/tiny/critic.py)


class TinyCriticTrainConfig(Strict):
    """Supervised training of a tiny *critic* at build time (reward model only): a critic SFT set is built
    from the project's data engine (`pipeline/critic/training/data_builder.py`: targeted edits, clean pairs, the
    default tiny policy's natural errors labelled by the structural teacher) and the random tiny model is
    fine-tuned on it with DeepSpeed (`pipeline/critic/training`), once, cached by config hash.
    steps: 0 keeps the plain random model."""

    steps: int = Field(0, ge=0)
    edits_per_task: int = Field(100, ge=0)
    clean_per_task: int = Field(20, ge=0)
    natural_per_task: int = Field(20, ge=0)
    micro_batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    seed: int = 0
    # The answer bounds the critic is trained to write within; `reward.limits` must be the same (checked at
    # start-up), or the served answers would be cut where the trained ones were not.
    limits: JudgementLimits = JudgementLimits(max_errors=4, max_location_chars=48, max_description_chars=96)


class TinyModelConfig(Strict):
    """A random Qwen3-VL built offline. Sizes are kept tiny so CPU tests run in seconds."""

    text: TinyTextConfig = TinyTextConfig()
    vision: TinyVisionConfig = TinyVisionConfig()
    # Upper bound for the byte-level BPE trained on our own code corpus (it stops earlier when the corpus
    # offers no more merges: ~1.8k with Qwen's digit-by-digit split).
    vocab_size: int = Field(4096, ge=512)
    seed: int = 0
    # Processor image budget: tiny models see small images (pixels = tokens * (patch*merge)^2).
    min_pixels: int = 32 * 32
    max_pixels: int = 128 * 128
    warm_start: TinyWarmStartConfig = TinyWarmStartConfig()
    train: TinyCriticTrainConfig = TinyCriticTrainConfig()  # critic SFT (the reward model's tiny only)


class ModelConfig(Strict):
    # "tiny" builds a random Qwen3-VL from `tiny`; anything else is a local HF checkpoint directory
    # (e.g. Qwen3-VL-8B-Instruct or Visual-ERM-8B) loaded unchanged by the same function.
    path: str = "tiny"
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class ModelsConfig(Strict):
    cache_dir: str = "~/.cache/visual-erm-rl/models"
    # The tiny policy is warm-started (~1 min, once, cached) so the embedded default's GRPO groups carry a
    # signal; the tiny reward model is a trained critic (data engine → DeepSpeed SFT, once, cached; see
    # pipeline/tiny/critic.py), so wrong renderings get discrepancies listed. `reward.tiny.train.steps=0`
    # keeps the random one.
    policy: ModelConfig = ModelConfig(tiny=TinyModelConfig(warm_start=TinyWarmStartConfig(
        steps=300, revision_examples_per_task=16)))
    reward: ModelConfig = ModelConfig(tiny=TinyModelConfig(seed=1, train=TinyCriticTrainConfig(steps=TINY_CRITIC_STEPS)))

    @model_validator(mode="after")
    def _roles(self) -> ModelsConfig:
        if self.policy.tiny.train.steps:
            raise ValueError("models.policy.tiny.train is the critic's SFT; the policy's is tiny.warm_start")
        if self.reward.tiny.warm_start.steps:
            raise ValueError("models.reward.tiny.warm_start is the policy's warm start; the critic's is "
                             "tiny.train")
        return self
