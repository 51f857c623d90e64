"""Model loading behind one function for tiny offline models and real checkpoints.

`path: tiny` in the config builds (once, cached by config hash) a random Qwen3-VL with a code-trained tokenizer,
optionally warm-started by a short SFT (`tiny.warm_start`, so a tiny policy renders some of the time);
any other `path` is a local HF checkpoint directory (Qwen3-VL-8B-Instruct, Visual-ERM-8B) loaded unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import torch
import transformers

from pipeline.cache import build_once
from pipeline.config import ModelConfig
from pipeline.models.processor import Qwen3VLImageOnlyProcessor, load_processor

# Bump when the tiny-model recipe changes so stale caches are rebuilt, not reused.
# 3: compact programs join the tokenizer corpus; optional SFT warm start (tiny.warm_start).
TINY_RECIPE_VERSION = 3
CORPUS_PROGRAMS = 1500  # synthetic programs the tokenizer is trained on (~1 s)
# Compact programs (warm_start.py) in the tokenizer corpus: their boilerplate (`import matplotlib.pyplot as
# plt`, `|---|`, `<svg viewBox=`) becomes a few tokens, so whole answers fit a tiny rollout's token budget.
COMPACT_CORPUS_PROGRAMS = 300


def code_corpus(n: int = CORPUS_PROGRAMS, seed: int = 0) -> Iterable[str]:
    """The project's own synthetic chart / table / SVG programs: what the policy is asked to write."""
    from pipeline.data.generators import synthesize_code  # late: only needed when building

    for i in range(n):
        yield synthesize_code(("chart", "table", "svg")[i % 3], i, seed=seed, split="tokenizer")


def tokenizer_corpus() -> Iterable[str]:
    from pipeline.models.warm_start import compact_corpus

    yield from code_corpus()
    yield from compact_corpus(COMPACT_CORPUS_PROGRAMS)


CRITIC_CORPUS_LABELS = 600  # targeted-edit answers (no rendering needed) in a tiny critic's tokenizer corpus


def critic_corpus() -> Iterable[str]:
    """What a tiny critic reads and writes: the code corpus, its three instructions (so the ~800-token English
    prompt tokenizes to a few hundred word tokens, which is most of the cost of every training step) and
    answers written from targeted-edit labels, in the exact answer format."""
    from pipeline.critic.config import JudgementLimits
    from pipeline.critic.prompts import prompt
    from pipeline.critic.schema import serialize_answer
    from pipeline.data.edits import EditNotApplicable, propose_edit
    from pipeline.data.generators import generate_program, item_rng

    yield from tokenizer_corpus()
    tasks = ("chart", "table", "svg")
    for _ in range(50):
        yield from (prompt(t) for t in tasks)
    limits = JudgementLimits()
    for i in range(CRITIC_CORPUS_LABELS):
        task = tasks[i % 3]
        rng = item_rng(0, f"tokenizer-labels/{task}", i)
        code, _ = generate_program(task, rng, "html" if task == "table" else "mixed")
        try:
            _, label = propose_edit(task, code, rng)
        except EditNotApplicable:
            continue
        yield serialize_answer(task, [label.to_dict()], limits)


def tiny_cache_key(model_cfg: ModelConfig) -> str:
    payload = {
        "tiny": model_cfg.tiny.model_dump(mode="json"),
        "recipe": TINY_RECIPE_VERSION,
        "corpus_programs": CORPUS_PROGRAMS,
        "compact_corpus_programs": COMPACT_CORPUS_PROGRAMS,
        "transformers": transformers.__version__,
    }
    if model_cfg.tiny.train.steps:  # a trained critic: its tokenizer corpus and training recipe too
        from pipeline.critic.tiny import TINY_CRITIC_RECIPE_VERSION

        payload["critic"] = {"corpus_labels": CRITIC_CORPUS_LABELS, "recipe": TINY_CRITIC_RECIPE_VERSION}
    else:
        # The `train` section exists for every tiny model; an untrained one must keep its old cache key.
        payload["tiny"].pop("train", None)
    if not model_cfg.tiny.warm_start.revision_examples_per_task:  # models built before revision examples existed
        payload["tiny"]["warm_start"].pop("revision_examples_per_task", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_model_path(model_cfg: ModelConfig, cache_dir: str | Path) -> Path:
    """Local directory holding the model: the checkpoint path itself, or the (built on demand) tiny model."""
    if model_cfg.path != "tiny":
        path = Path(os.path.expanduser(model_cfg.path))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {path} is not a Hugging Face checkpoint directory (no config.json). "
                "Models are never downloaded at run time: give a local directory, or path: tiny."
            )
        return path
    from pipeline.models.tiny import build_tiny_qwen3_vl

    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    critic = model_cfg.tiny.train.steps > 0

    def build(scratch: Path) -> None:
        build_tiny_qwen3_vl(model_cfg.tiny, scratch, corpus=critic_corpus if critic else tokenizer_corpus)
        if critic:  # data engine → DeepSpeed SFT, in place (pipeline/critic/tiny.py)
            from pipeline.critic.tiny import train_tiny_critic

            train_tiny_critic(model_cfg.tiny.train, scratch, cache_dir)

    return build_once(cache_dir / f"tiny-qwen3-vl-{tiny_cache_key(model_cfg)}", build, has_model)


def has_model(path: Path) -> bool:
    return (path / "config.json").is_file()


def load_model(path: str | Path, dtype: str = "float32") -> torch.nn.Module:
    """Any HF image-text-to-text checkpoint (Qwen3-VL family) from a local directory."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(Path(path), dtype=getattr(torch, dtype))
    return model


def load_model_and_processor(
    model_cfg: ModelConfig, cache_dir: str | Path
) -> tuple[torch.nn.Module, Qwen3VLImageOnlyProcessor]:
    path = resolve_model_path(model_cfg, cache_dir)
    return load_model(path, model_cfg.dtype), load_processor(path)


__all__ = [
    "Qwen3VLImageOnlyProcessor",
    "code_corpus",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "resolve_model_path",
]
