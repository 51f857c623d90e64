"""Synthetic reference datasets: seeded programs rendered into reference images, written as verl parquet.

Every attempted item is accounted for: rendered items go to the parquet file, the others to
`failures.jsonl` with the renderer's typed reason, and `summary.json` holds the counts and success rate.
Chart rows also carry the reference's ChartMimic-style trace (`extra_info.chart_trace`, JSON) when the
renderer returned one; rendered charts without it are counted (`untraced`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from pipeline.data.config import DataConfig
from pipeline.data.generators import generate_program, item_rng
from pipeline.data.records import png_bytes, write_json, write_parquet
from pipeline.metrics.chart import TRACE_FIELD, encode_trace, is_trace
from pipeline.tasks import get_task


@dataclass
class SynthSummary:
    task: str
    requested: int
    rendered: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    untraced: int = 0  # chart rows written without a reference trace (tracing off, or none came back)
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.rendered / self.requested if self.requested else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "success_rate": self.success_rate}


def default_render(task: str, code: str, config: DataConfig, trace: bool = False):
    from pipeline.render import render  # imported late: generators and edits work without the renderer

    return render(task, code, size=config.size_for(task), timeout_s=config.render_timeout_s,
                  trace=trace and task == "chart")


def reference_render(task: str, code: str, config: DataConfig):
    """What synth renders references with: charts traced too, unless `config.chart_traces` is off."""
    return default_render(task, code, config, trace=config.chart_traces)


def synthesize(task: str, n: int, out_dir: Path, config: Optional[DataConfig] = None, split: str = "train",
               render_fn: Optional[Callable] = None, progress: bool = True) -> SynthSummary:
    config = config or DataConfig()
    render_fn = render_fn or reference_render
    spec = get_task(task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, failures, rows = SynthSummary(task, n), Counter(), []
    start = time.perf_counter()
    with open(out_dir / "failures.jsonl", "w") as failure_log:
        for index in tqdm(range(n), desc=f"synth {task}", disable=not progress, unit="item"):
            # The split is part of the stream: train and eval sets made with one seed must not share items.
            code, meta = generate_program(task, item_rng(config.seed, f"{split}/{task}", index), config.table_format)
            result = render_fn(task, code, config)
            if not result.ok:
                reason = getattr(result.failure, "value", str(result.failure))
                failures[reason] += 1
                failure_log.write(json.dumps({"index": index, "failure": reason, "detail": result.detail,
                                              "code": code}) + "\n")
                continue
            extra_info = {"index": index, "split": split, "task": task, "seed": config.seed,
                          "meta": json.dumps(meta)}
            if task == "chart":
                trace = getattr(result, "trace", None)
                # Every chart row has the column (parquet needs one schema); "" = no trace for this row.
                extra_info[TRACE_FIELD] = encode_trace(trace) if is_trace(trace) else ""
                summary.untraced += not is_trace(trace)
            rows.append({
                "data_source": f"visual_erm_rl/synth_{task}",
                "prompt": spec.verl_prompt(),
                "images": [{"bytes": png_bytes(result.image)}],
                "ability": f"{task}_to_code",
                "reward_model": {"style": "model", "ground_truth": code},
                "extra_info": extra_info,
            })
    summary.rendered = len(rows)
    summary.failures = dict(failures)
    summary.seconds = round(time.perf_counter() - start, 2)
    if rows:
        write_parquet(rows, out_dir / f"{task}_{split}.parquet")
    write_json(summary.to_dict(), out_dir / "summary.json")
    return summary
