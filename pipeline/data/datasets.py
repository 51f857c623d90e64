"""Train / eval prompts for a run: the user's parquet files, or a synthetic set rendered once and cached.

The synthetic set is keyed by everything that determines it (tasks, counts, generator settings), built in a
scratch directory and renamed into place, so concurrent runs never see half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from pipeline.cache import build_once
from pipeline.data.config import DatasetConfig
from pipeline.data.loader import Prompt, load_prompts
from pipeline.data.synth import synthesize

log = logging.getLogger(__name__)
SYNTH_VERSION = 4  # bump when the generators change what a seed produces (2: chart rows carry their trace;
#                   3: charts drawn at the dpi that fits the output size, not resampled;
#                   4: a chart is its script's saved figure, tables captured whole and small ones scaled up)


def prepare_datasets(cfg: DatasetConfig) -> tuple[list[Prompt], list[Prompt]]:
    if cfg.train_paths:
        train, rejected = load_prompts([Path(p).expanduser() for p in cfg.train_paths])
        evals, rejected_eval = load_prompts([Path(p).expanduser() for p in cfg.eval_paths]) if cfg.eval_paths \
            else ([], [])
        if rejected or rejected_eval:
            log.warning("dataset: %d train and %d eval rows rejected (reasons logged above)", len(rejected),
                        len(rejected_eval))
        return train, evals
    root = synthetic_dataset(cfg)
    splits = []
    for split in ("train", "eval"):
        files = sorted((root / split).glob("*/*.parquet"))
        splits.append(load_prompts(files)[0] if files else [])
    return splits[0], splits[1]


def synthetic_dataset(cfg: DatasetConfig) -> Path:

    key = hashlib.sha256(json.dumps({
        "v": SYNTH_VERSION, "tasks": cfg.tasks, "train": cfg.synth_train_per_task,
        "eval": cfg.synth_eval_per_task, "synth": cfg.synth.model_dump(mode="json"),
    }, sort_keys=True).encode()).hexdigest()[:16]

    def build(scratch: Path) -> None:
        # The split names the generators' random stream: the held-out split never repeats a training item.
        for split, n in (("train", cfg.synth_train_per_task), ("eval", cfg.synth_eval_per_task)):
            for task in cfg.tasks:
                if n:
                    summary = synthesize(task, n, scratch / split / task, config=cfg.synth, split=split)
                    log.info("synthetic %s/%s: %d of %d rendered", split, task, summary.rendered, n)

    return build_once(Path(os.path.expanduser(cfg.cache_dir)) / f"synth-{key}", build,
                      lambda path: (path / "train").is_dir())
