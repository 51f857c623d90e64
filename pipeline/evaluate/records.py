"""Benchmark items for critic evaluation, from our targeted-edit parquet sets or a VC-RewardBench copy.

VC-RewardBench layout (JSONL or a JSON list): {"id", "category": "chart"|"table"|"svg", "gt_img_path",
"pred_img_path", "human_errors": [{"type"|"category", "severity", "location"?, "description"}],
"pred_json"?: the critic's answer}. Image paths are taken relative to the file's directory.
A record that cannot be used becomes a `BadRecord` with the reason, so it is counted, not dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from pipeline.data.records import RecordFormatError, decode_image, read_rows
from pipeline.sample import TASK_KINDS


@dataclass
class BenchItem:
    id: str
    task: str
    annotated: Any  # raw error list
    reference: Any  # PNG bytes or a Path; decoded on demand (a critic that never looks saves the work)
    candidate: Any
    embedded_prediction: Any = None  # pred_json when the record carries one
    # The programs behind the two images, when the record carries them (our parquet sets do): critics that
    # read code instead of pixels (the structural baseline) need them; None = not in the record.
    reference_code: Optional[str] = None
    candidate_code: Optional[str] = None
    source: Optional[str] = None  # critic sets: edit / clean / natural (`pipeline/critic/training/dataset.py`)

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        return _load(self.reference, f"{self.id} reference"), _load(self.candidate, f"{self.id} candidate")


@dataclass
class BadRecord:
    position: int
    id: Optional[str]
    reason: str


def _load(src: Any, where: str) -> np.ndarray:
    if isinstance(src, Path):
        try:
            data = src.read_bytes()
        except OSError as e:
            raise RecordFormatError(f"{where}: cannot read {src}: {e.strerror}") from None
        return decode_image(data, where)
    return decode_image(src, where)


def _vc_item(i: int, rec: Any, base: Path) -> Union[BenchItem, BadRecord]:
    if not isinstance(rec, dict):
        return BadRecord(i, None, f"record is {type(rec).__name__}, not an object")
    rid = str(rec.get("id", rec.get("idx", i)))
    task = rec.get("category")
    if task not in TASK_KINDS:
        return BadRecord(i, rid, f"category {task!r} is not chart/table/svg")
    if not isinstance(rec.get("human_errors", []), list):
        return BadRecord(i, rid, "human_errors is not a list")
    paths = []
    for key in ("gt_img_path", "pred_img_path"):
        if not isinstance(rec.get(key), str):
            return BadRecord(i, rid, f"missing {key}")
        p = Path(rec[key])
        paths.append(p if p.is_absolute() else base / p)
    return BenchItem(rid, task, rec.get("human_errors") or [], paths[0], paths[1], rec.get("pred_json"))


def _candidate_code(info: dict) -> Optional[str]:
    """Critic sets name the rendered program `candidate_code`, targeted-edit sets `edited_code`."""
    return info.get("candidate_code") or info.get("edited_code") or None


def iter_bench_items(path: str | Path) -> Iterator[Union[BenchItem, BadRecord]]:
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        for i, row in enumerate(read_rows(path)):
            info = row.get("extra_info") or {}
            images = row.get("images") or []
            if len(images) != 2 or info.get("task") not in TASK_KINDS:
                yield BadRecord(i, row.get("id"), "not a targeted-edit row (needs 2 images and extra_info.task)")
                continue
            yield BenchItem(str(row.get("id", i)), info["task"], info.get("errors") or [],
                            images[0], images[1], reference_code=info.get("reference_code") or None,
                            candidate_code=_candidate_code(info), source=info.get("source") or None)
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordFormatError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(records, list):
            raise RecordFormatError(f"{path}: top level must be a list of records")
        for i, rec in enumerate(records):
            yield _vc_item(i, rec, path.parent)
        return
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRecord(i, None, f"line {i + 1} is not JSON: {e.msg}")
            continue
        yield _vc_item(i, rec, path.parent)
