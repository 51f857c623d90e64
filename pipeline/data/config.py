"""The `data:` section (`DatasetConfig`: prompt files or the synthetic set, prompts per step) and its `synth:`
part (`DataConfig`: synthetic data and targeted-edit generation)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from pipeline.sample import TASK_KINDS, TaskKind
from pipeline.schema import Strict


class DataConfig(Strict):
    seed: int = 0
    # Image size per kind as (width, height); None = the renderer's default for the kind
    # (chart 640×480, svg 336×336, table 768×768).
    chart_size: Optional[tuple[int, int]] = None
    svg_size: Optional[tuple[int, int]] = None
    table_size: Optional[tuple[int, int]] = None
    render_timeout_s: Optional[float] = Field(None, gt=0)  # None = the renderer's per-kind limit
    # Tables: "mixed" writes ~30 % of merge-free tables as Markdown, the rest as HTML.
    table_format: Literal["mixed", "html", "markdown"] = "mixed"
    # Charts: store the reference's ChartMimic-style trace with each row (extra_info.chart_trace), so policy
    # evaluation scores text/layout/type/colour F1 without re-running reference code.
    chart_traces: bool = True
    # Targeted edits: how many errors one pair carries, and how hard to try for each.
    edits_per_pair: tuple[int, int] = (1, 3)
    proposals_per_edit: int = Field(4, ge=1)
    # Give up on an edit set after this many references per requested pair (a bad generator must not loop).
    max_attempts_per_pair: int = Field(3, ge=1)

    def size_for(self, task: str) -> Optional[tuple[int, int]]:
        return {"chart": self.chart_size, "svg": self.svg_size, "table": self.table_size}[task]

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        lo, hi = self.edits_per_pair
        if not 1 <= lo <= hi:
            raise ValueError(f"edits_per_pair must satisfy 1 <= min <= max, got {self.edits_per_pair}")
        return self


class DatasetConfig(Strict):
    """Prompts: local verl-style parquet files, or (when none are given) a synthetic set made at start-up."""

    train_paths: list[str] = []  # parquet files or directories of them
    cache_dir: str = "~/.cache/visual-erm-rl/data"  # where the synthetic set is rendered once and kept
    eval_paths: list[str] = []
    tasks: list[TaskKind] = list(TASK_KINDS)  # synthetic set only
    synth_train_per_task: int = Field(16, ge=1)
    synth_eval_per_task: int = Field(2, ge=0)
    synth: DataConfig = DataConfig()
    prompts_per_step: int = Field(4, ge=1)  # GRPO groups per update
