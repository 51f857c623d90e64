"""The embedded default's trained tiny critic: data engine → DeepSpeed SFT, once, cached with the model.

`pipeline.tiny.ensure_model` builds a random tiny Qwen3-VL (tokenizer trained on code *and* the critic's
own instructions and answers) and, when `models.reward.tiny.train.steps > 0`, calls `train_tiny_critic` on
that scratch directory before renaming it into the cache:

  1. a critic SFT set (`pipeline/critic/training/data_builder.py`): targeted edits and clean pairs of synthetic
     references, plus the default tiny policy's natural errors labelled by the structural teacher;
  2. supervised fine-tuning with DeepSpeed (`pipeline/critic/training/`), one rank in a fresh process (`train_local`), so
     the caller — the driver, a test, a reward actor — never holds a process group;
  3. the fine-tuned weights replace the random ones in place; the set, the training log (`metrics.jsonl`)
     and a summary (`critic_train.json`) stay beside them under `build/`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from pipeline.critic.training.config import CriticTrainConfig, DeepSpeedSettings
from pipeline.critic.training.launch import train_local
from pipeline.models.config import ModelConfig, ModelsConfig, TinyCriticTrainConfig

log = logging.getLogger(__name__)

# Bump when the recipe (data mix, training loop) changes so cached tiny critics are rebuilt.
TINY_CRITIC_RECIPE_VERSION = 1
_WEIGHT_FILES = ("model.safetensors", "config.json", "generation_config.json")


def train_tiny_critic(train: TinyCriticTrainConfig, model_dir: Path, cache_dir: str | Path, policy: Path,
                      progress: bool = True) -> dict:
    """Fine-tune the random tiny critic in `model_dir` in place; `policy` is the built tiny policy whose
    natural errors join the data."""
    # heavy: pulls in pyarrow
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset

    start = time.perf_counter()
    model_dir = Path(model_dir)
    build = model_dir / "build"
    limits = train.limits  # the embedded default serves the critic under the same bounds (checked)
    data_cfg = CriticDataConfig(split="critic-train", seed=train.seed, edits_per_task=train.edits_per_task,
                                clean_per_task=train.clean_per_task, natural_per_task=train.natural_per_task,
                                limits=limits)
    # Natural errors come from the embedded default's tiny policy (built by the caller in the same cache).
    models = ModelsConfig(cache_dir=str(cache_dir), policy=ModelConfig(path=str(policy)))
    manifest = build_critic_dataset(data_cfg, build / "data", models,
                                    progress=progress)
    data_s = time.perf_counter() - start
    sft = CriticTrainConfig(
        data=str(build / "data"), model=ModelConfig(path=str(model_dir)), cache_dir=str(cache_dir),
        output_dir=str(build / "sft"), limits=limits, steps=train.steps,
        micro_batch_size=train.micro_batch_size, lr=train.lr, warmup_steps=min(train.warmup_steps, train.steps),
        seed=train.seed, deepspeed=DeepSpeedSettings(zero_stage=train.zero_stage),
        wandb={"mode": "disabled"}, log_every_steps=10, num_cpus_per_rank=2, timeout_s=3600,
    )
    summary = train_local(sft)
    final = Path(summary["final_dir"])
    for name in _WEIGHT_FILES:  # the fine-tuned weights replace the random ones; tokenizer/processor are the same
        if (final / name).is_file():
            shutil.copy2(final / name, model_dir / name)
    shutil.rmtree(build / "sft" / "checkpoints", ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    record = {"recipe": TINY_CRITIC_RECIPE_VERSION, "rows": manifest["rows"], "data_seconds": round(data_s, 1),
              "train_seconds": round(summary.get("seconds", 0.0), 1),
              "first_loss": summary.get("first_loss"), "final_loss": summary.get("final_loss"),
              "steps": summary.get("steps"), "seconds": round(time.perf_counter() - start, 1)}
    (model_dir / "critic_train.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("tiny critic: %s rows, %d SFT steps, loss %.3f → %.3f, %.0f s", manifest["total_rows"],
             train.steps, record["first_loss"] or 0, record["final_loss"] or 0, record["seconds"])
    return record
