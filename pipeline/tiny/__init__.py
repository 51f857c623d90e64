"""Everything tiny: random Qwen3-VL models built offline from config, for the embedded default and the tests.

`path: tiny` in a `models:` entry means "build me": a tokenizer trained on the project's own corpus
(`corpus.py`, `tokenizer.py`), a random Qwen3-VL of the configured size (`model.py`), the policy's warm start
(`warm_start.py`) or the critic's data-engine + DeepSpeed SFT (`critic.py`) — once, cached by config hash.
Entry points call `ensure_models` before anything loads a model; `pipeline.models` only loads local
directories and never builds. This package sits high in the house: building uses data, rendering, rollouts
and the critic's training, none of which a loader should pull in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import transformers

from pipeline.cache import build_once
from pipeline.models import has_model, model_dir
from pipeline.models.config import ModelConfig, ModelsConfig
from pipeline.tiny.corpus import (
    COMPACT_CORPUS_PROGRAMS,
    CORPUS_PROGRAMS,
    CRITIC_CORPUS_LABELS,
    TINY_RECIPE_VERSION,
    critic_corpus,
    tokenizer_corpus,
)
from pipeline.tiny.critic import TINY_CRITIC_RECIPE_VERSION, train_tiny_critic
from pipeline.tiny.model import build_tiny_qwen3_vl

TINY = "tiny"  # the `path` that asks for a tiny model


def tiny_cache_key(model_cfg: ModelConfig) -> str:
    payload = {
        "tiny": model_cfg.tiny.model_dump(mode="json"),
        "recipe": TINY_RECIPE_VERSION,
        "corpus_programs": CORPUS_PROGRAMS,
        "compact_corpus_programs": COMPACT_CORPUS_PROGRAMS,
        "transformers": transformers.__version__,
    }
    if model_cfg.tiny.train.steps:  # a trained critic: its tokenizer corpus and training recipe too
        payload["critic"] = {"corpus_labels": CRITIC_CORPUS_LABELS, "recipe": TINY_CRITIC_RECIPE_VERSION}
    else:
        # The `train` section exists for every tiny model; an untrained one must keep its old cache key.
        payload["tiny"].pop("train", None)
    if not model_cfg.tiny.warm_start.revision_examples_per_task:  # models built before revision examples existed
        payload["tiny"]["warm_start"].pop("revision_examples_per_task", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_model(model_cfg: ModelConfig, cache_dir: str | Path) -> Path:
    """The local directory holding the model: a checkpoint path checked (never downloaded), or the tiny
    model built on demand in `cache_dir` (cached by `tiny_cache_key`: a second call builds nothing)."""
    if model_cfg.path != TINY:
        return model_dir(model_cfg)
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    critic = model_cfg.tiny.train.steps > 0

    def build(scratch: Path) -> None:
        build_tiny_qwen3_vl(model_cfg.tiny, scratch, corpus=critic_corpus if critic else tokenizer_corpus)
        if critic:  # data engine → DeepSpeed SFT, in place (critic.py)
            policy = ensure_model(ModelsConfig().policy, cache_dir)  # the embedded default's, for natural errors
            train_tiny_critic(model_cfg.tiny.train, scratch, cache_dir, policy=policy)

    return build_once(cache_dir / f"tiny-qwen3-vl-{tiny_cache_key(model_cfg)}", build, has_model)


def ensure_models(models: ModelsConfig, policy: bool = True, reward: bool = True) -> ModelsConfig:
    """`models` with each requested role's `path` replaced by its local directory (built if tiny): what the
    entry points hand to everything that loads a model. A role not requested is left as it is (a reward
    served by an endpoint loads nothing)."""
    update = {}
    if policy:
        update["policy"] = models.policy.model_copy(update={"path": str(ensure_model(models.policy, models.cache_dir))})
    if reward:
        update["reward"] = models.reward.model_copy(update={"path": str(ensure_model(models.reward, models.cache_dir))})
    return models.model_copy(update=update)


__all__ = ["TINY", "ensure_model", "ensure_models", "tiny_cache_key"]
