"""Settings of a critic SFT run (`python -m pipeline.critic train`, `actors/critic_trainer.py`).

One flat model, validated before anything starts: an unknown key or a wrong type raises `ConfigError`
naming the key's dotted path, like the run config (`pipeline/config.py`, whose override helpers are reused).
Defaults are a CPU run of the tiny critic; a GPU preset sets `num_gpus_per_rank: 1`, `deepspeed.bf16: true`
and a real checkpoint path. Example:

    data: runs/critic-data            # written by `python -m pipeline.critic data`
    model: {path: /models/Qwen3-VL-8B-Instruct}
    steps: 2000
    micro_batch_size: 2
    gradient_accumulation_steps: 8
    ranks: 8
    num_gpus_per_rank: 1
    deepspeed: {zero_stage: 3, bf16: true}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.critic.config import RewardConfig
from pipeline.models.config import ModelConfig, TinyModelConfig
from pipeline.sample import JudgementLimits, TaskKind
from pipeline.schema import Strict, deep_merge, read_section_data, validate


class DeepSpeedSettings(Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2  # 0: plain data parallel; 1/2/3 shard optimizer / +grads / +weights
    bf16: bool = False  # bf16 compute with fp32 master weights (GPUs; works on CPU too, fp16 does not)
    # Merged (deeply) into the generated DeepSpeed config last, e.g. {"zero_optimization": {"overlap_comm":
    # true}} or {"optimizer": {"params": {"torch_adam": false}}} (FusedAdam: needs its CUDA op built). It may change anything: you own the result.
    extra: dict[str, Any] = {}


class CriticWandbConfig(Strict):
    # offline needs no account (files under <output_dir>/wandb, `wandb sync` later); online needs
    # WANDB_API_KEY; disabled turns wandb off (metrics.jsonl is always written).
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "visual-erm-critic"


class CriticTrainConfig(Strict):
    # --- what to train on, from what ---
    data: str  # a critic SFT set directory (manifest.json + <task>.parquet), see pipeline/critic/training/dataset.py
    # The critic to fine-tune: `tiny` (a random tiny Qwen3-VL built offline, the embedded default's reward
    # model) or a local HF checkpoint directory (Qwen3-VL-8B-Instruct, a Visual-ERM checkpoint).
    model: ModelConfig = ModelConfig(tiny=TinyModelConfig(seed=1))
    cache_dir: str = "~/.cache/visual-erm-rl/models"  # where `path: tiny` is built once
    # Writes metrics.jsonl, checkpoints/step<N>/ (DeepSpeed), final/ (HF checkpoint), wandb/.
    output_dir: str = "runs/critic-sft"
    tasks: list[TaskKind] | None = None  # None = every task in the set
    # The answer limits the set was written with (its manifest's "limits"); a mismatch is an error, since the
    # served critic's grammar is built from these and must admit every training answer.
    limits: JudgementLimits = JudgementLimits()
    max_image_side: int = Field(1024, ge=16)  # images resized like the serving path (paper: ≤1024 px)
    # The reward settings the critic will be served with (`reward:` of the run config, or just its `tasks:`):
    # SFT builds each task's prompt (prompt file, message layout, image handling) exactly as that serving
    # config does, and the set's answer format must be the one it serves. None = ours for everything.
    serve: RewardConfig | None = None

    # --- optimisation ---
    steps: int = Field(100, ge=1)  # optimizer steps (not micro-steps)
    micro_batch_size: int = Field(1, ge=1)  # examples per forward/backward on one rank
    # Global batch = micro_batch_size × gradient_accumulation_steps × ranks examples per optimizer step.
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr: float = Field(1e-5, gt=0)  # peak learning rate; linear warm-up to it, then linear decay to 0
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)  # global gradient norm clip
    # Recompute each layer's activations in the backward pass (non-reentrant) instead of keeping them: what lets
    # an 8B critic with two ≤1024 px images per example fit a GPU (pipeline/critic/training/memory.py).
    gradient_checkpointing: bool = False
    seed: int = 0  # data order (identical on every rank) and torch RNG

    # --- checkpoints and logging ---
    save_every_steps: int = Field(0, ge=0)  # a DeepSpeed checkpoint every N steps and at the end; 0 = never
    keep_checkpoints: int = Field(2, ge=1)  # the newest N are kept, older ones deleted
    resume: bool = False  # continue from the newest checkpoint under output_dir (fresh start if there is none)
    log_every_steps: int = Field(1, ge=1)  # metrics.jsonl / wandb cadence (the progress bar shows every step)
    wandb: CriticWandbConfig = CriticWandbConfig()

    # --- workers: one Ray actor (one process) per data-parallel rank ---
    ranks: int = Field(1, ge=1)
    num_cpus_per_rank: float = Field(1.0, gt=0)  # also the rank's torch threads (at least 1)
    num_gpus_per_rank: float = Field(0.0, ge=0)
    dist_backend: Literal["gloo", "nccl"] = "gloo"  # when not given: nccl if num_gpus_per_rank > 0, else gloo
    deepspeed: DeepSpeedSettings = DeepSpeedSettings()
    timeout_s: float = Field(3600.0, gt=0)  # the whole job: start-up, training, final save

    @model_validator(mode="before")
    @classmethod
    def _default_backend(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dist_backend") is None:
            data = {**data, "dist_backend": "nccl" if float(data.get("num_gpus_per_rank") or 0) > 0 else "gloo"}
        return data

    @model_validator(mode="after")
    def _check(self) -> CriticTrainConfig:
        if self.dist_backend == "nccl" and self.num_gpus_per_rank <= 0:
            raise ValueError("dist_backend=nccl needs GPU ranks (num_gpus_per_rank > 0); use gloo on CPU")
        if self.model.dtype == "float16":
            raise ValueError("model.dtype=float16 is not supported (fp16 needs loss scaling); use bfloat16")
        if self.model.dtype == "bfloat16" and not self.deepspeed.bf16:
            # Without DeepSpeed's bf16 mode the optimizer would update bf16 weights directly (no fp32 master).
            raise ValueError("model.dtype=bfloat16 needs deepspeed.bf16=true (fp32 master weights)")
        return self

    @property
    def dtype(self) -> str:
        """The model's dtype as loaded and as saved in final/ (`model.dtype`: one key, not two)."""
        return self.model.dtype

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.ranks

    @property
    def out(self) -> Path:
        return Path(os.path.expanduser(self.output_dir))


def load_train_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                      ) -> CriticTrainConfig:
    """Read a YAML file (optional), apply `a.b=value` overrides, validate. Raises ConfigError naming the key."""
    data = read_section_data(CriticTrainConfig, path, overrides)
    # A partial `model:` section keeps the critic's defaults (the tiny critic's seed) for what it leaves out.
    if isinstance(data.get("model"), dict):
        default_model = CriticTrainConfig.model_fields["model"].default.model_dump(mode="json")
        data["model"] = deep_merge(default_model, data["model"])
    return validate(CriticTrainConfig, data, source=str(path) if path is not None else "command line")
