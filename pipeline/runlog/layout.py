"""What a run writes under `<run.output_dir>/<run.name>/`, named once: the driver, the tracker, the report, the
ablation and the benchmarks all find a run's files through `RunLayout`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def metrics(self) -> Path:  # one JSON record per step (every scalar), appended
        return self.root / "metrics.jsonl"

    @property
    def run_info(self) -> Path:  # name, commit, start time, the resolved config
        return self.root / "run.json"

    @property
    def samples(self) -> Path:  # the sample tables (best, worst, random rows per task), for the report
        return self.root / "samples"

    @property
    def checkpoints(self) -> Path:  # step_<N>/ and `latest` (pipeline/training/checkpoint.py)
        return self.root / "checkpoints"

    @property
    def faults(self) -> Path:  # what the run survived (replacements, resends, restarts, discarded work)
        return self.root / "faults.json"

    @property
    def data_order(self) -> Path:  # the prompts each update trained on, one line per step
        return self.root / "data_order.jsonl"

    @property
    def wandb_data(self) -> Path:
        return self.root / "wandb" / "data"

    @property
    def report(self) -> Path:  # `python -m pipeline.report RUN_DIR` writes it
        return self.root / "report.html"
