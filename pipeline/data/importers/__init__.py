"""Public benchmark layouts → the verl-style parquet the driver reads (`python -m pipeline.data import`).

    from pipeline.data.importers import import_dataset
    summary = import_dataset("chartmimic", "ChartMimic/ori_500", "data/chartmimic")

Each format (`formats.py`) reads its layout into `SourceItem`s (task, reference code, image if the layout has
one) or `Unreadable`s (a row that cannot be read: bad JSON, missing image, no code). Every item's code is
rendered in our sandbox (`pipeline.render`), because the policy's code is rendered there too:

* no image in the source (SVG files, code-only rows): the rendering is the reference image; a reference that
  does not render has no image at all and is excluded;
* an image in the source (ChartMimic, PubTabNet, ...): the benchmark's own image stays the reference (it is
  what the benchmark scores against); a reference code that does not render in our sandbox is kept, flagged
  (`extra_info.reference_renders = false` + the reason), because its image is still a valid prompt — pass
  `drop_unrendered=True` (`--drop-unrendered`) to exclude those instead.

Nothing is dropped silently: every excluded or flagged item is a line of `DIR/failures.jsonl` (id, where,
status, reason), the counts are in `DIR/import_report.json` and on stdout.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.data.importers.formats import read_source
from pipeline.data.importers.items import SourceItem, Unreadable
from pipeline.data.records import png_bytes, write_json, write_parquet
from pipeline.metrics.chart import TRACE_FIELD, encode_trace, is_trace
from pipeline.sample import TASK_KINDS
from pipeline.tasks import get_task

REPORT_FILE = "import_report.json"
FAILURES_FILE = "failures.jsonl"
DEFAULT_MAX_SIDE = 1024  # reference images are shrunk to fit this (the paper's RM input bound)


@dataclass
class ImportSummary:
    format: str
    source: str
    read: int = 0  # items and unreadable rows the format yielded
    written: int = 0  # rows in the parquet files
    rendered_reference: int = 0  # written rows whose image is our rendering (no image in the source)
    flagged: int = 0  # written with an image, but the reference code does not render in our sandbox
    excluded: dict[str, int] = field(default_factory=dict)  # reason → count
    per_task: dict[str, int] = field(default_factory=dict)  # written rows per task
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "excluded_total": self.excluded_total}

    def line(self) -> str:
        """The one-line account printed on stdout."""
        excluded = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())) or "none"
        return (f"import {self.format}: {self.read} read, {self.written} written "
                f"({self.rendered_reference} with our rendering as reference, {self.flagged} kept flagged: "
                f"reference code does not render), {self.excluded_total} excluded ({excluded})")


def default_render(task: str, code: str):
    from pipeline.render import render  # late: reading a layout needs no renderer

    return render(task, code, trace=task == "chart")


def fit_image(image: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """RGB uint8, shrunk (aspect kept) so that neither side exceeds max_side; never enlarged."""
    if max_side and max(image.shape[:2]) > max_side:
        pil = Image.fromarray(image)
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(pil)
    return image


def import_dataset(fmt: str, src: Path | str, out_dir: Path | str, *, split: str = "train",
                   task: Optional[str] = None, images_dir: Optional[Path] = None,
                   fields: Optional[dict[str, str]] = None, max_side: Optional[int] = DEFAULT_MAX_SIDE,
                   drop_unrendered: bool = False, limit: Optional[int] = None,
                   source_split: Optional[str] = None, render_fn: Optional[Callable] = None,
                   progress: bool = True) -> ImportSummary:
    """Convert `src` (a folder or file in format `fmt`) into `out_dir/<task>_<split>.parquet` files plus the
    report files. `task` overrides / supplies the task where the layout does not say it; `source_split` picks
    one split of a saved DatasetDict (hf-disk; default: all)."""

    if task is not None and task not in TASK_KINDS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_KINDS}")
    src, out_dir = Path(src), Path(out_dir)
    if not src.exists():
        raise FileNotFoundError(f"{fmt}: source {src} does not exist")
    render_fn = render_fn or default_render
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind in TASK_KINDS:  # a re-import replaces its files: no stale rows of an earlier one are read
        (out_dir / f"{kind}_{split}.parquet").unlink(missing_ok=True)
    summary = ImportSummary(fmt, str(src))
    excluded: Counter = Counter()
    rows: dict[str, list[dict]] = {}
    start = time.perf_counter()
    items: Iterable = read_source(fmt, src, task=task, images_dir=images_dir, fields=fields or {},
                                   split=source_split)
    with open(out_dir / FAILURES_FILE, "w") as failure_log:
        def note(item, status: str, reason: str, detail: str = "") -> None:
            failure_log.write(json.dumps({"id": item.id, "where": item.where, "status": status,
                                          "reason": reason, "detail": detail[:500]},
                                         ensure_ascii=False) + "\n")
            if status == "excluded":
                excluded[reason] += 1

        for item in tqdm(items, desc=f"import {fmt}", unit="item", disable=not progress):
            if limit is not None and summary.read >= limit:
                break
            summary.read += 1
            if isinstance(item, Unreadable):
                note(item, "excluded", item.reason, item.detail)
                continue
            if item.task not in TASK_KINDS:
                note(item, "excluded", "unknown_task", f"task {item.task!r}; pass --task")
                continue
            if not item.code or not item.code.strip():
                note(item, "excluded", "no_code")
                continue
            result = render_fn(item.task, item.code)
            failure = None if result.ok else getattr(result.failure, "value", str(result.failure))
            image, origin = item.image, "source"
            if image is None:
                if failure:
                    note(item, "excluded", f"render:{failure}", result.detail)
                    continue
                image, origin = result.image, "rendered"
            elif failure:
                if drop_unrendered:
                    note(item, "excluded", f"render:{failure}", result.detail)
                    continue
                note(item, "kept_flagged", f"render:{failure}", result.detail)
                summary.flagged += 1
            extra_info = {
                "index": len(rows.get(item.task, [])), "split": split, "task": item.task,
                "source_id": item.id, "source": item.where, "reference_image": origin,
                "reference_renders": failure is None, "render_failure": failure or "",
                "meta": json.dumps(item.meta, ensure_ascii=False, default=str),
            }
            if item.task == "chart":  # one schema per file: every chart row has the column ("" = none)
                trace = getattr(result, "trace", None) if result.ok else None
                extra_info[TRACE_FIELD] = encode_trace(trace) if is_trace(trace) else ""
            rows.setdefault(item.task, []).append({
                "data_source": f"import/{fmt}",
                "prompt": get_task(item.task).verl_prompt(),
                "images": [{"bytes": png_bytes(fit_image(np.ascontiguousarray(image), max_side))}],
                "ability": f"{item.task}_to_code",
                "reward_model": {"style": "model", "ground_truth": item.code},
                "extra_info": extra_info,
            })
            summary.rendered_reference += origin == "rendered"
    for kind, task_rows in sorted(rows.items()):
        path = out_dir / f"{kind}_{split}.parquet"
        write_parquet(task_rows, path)
        summary.files.append(path.name)
        summary.per_task[kind] = len(task_rows)
    summary.written = sum(summary.per_task.values())
    summary.excluded = dict(excluded)
    summary.seconds = round(time.perf_counter() - start, 2)
    write_json(summary.to_dict(), out_dir / REPORT_FILE)
    return summary


__all__ = ["DEFAULT_MAX_SIDE", "FAILURES_FILE", "ImportSummary", "REPORT_FILE", "SourceItem", "Unreadable",
           "fit_image", "import_dataset"]
