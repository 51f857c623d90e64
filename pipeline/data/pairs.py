"""Targeted-edit pairs: a reference rendering, an edited rendering and the ground-truth discrepancy list.

Recipe per pair: generate a reference program and render it; then apply 1–3 edits one at a time, each
rendered and compared with the previous rendering. An edit that fails to render or changes no pixel is
dropped (and counted), so every label in an emitted pair corresponds to a visible change. Edits in a pair
come from different categories and only the first may be destructive (remove a row/series/shape), so a
later edit cannot erase what an earlier label describes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from pipeline.data.config import DataConfig
from pipeline.data.edits import EditLabel, EditNotApplicable, propose_edit, visual_erm_answer
from pipeline.data.generators import generate_program, item_rng
from pipeline.data.records import png_bytes, write_json, write_parquet
from pipeline.data.synth import default_render

EDIT_PROMPT = "<image>\n<image>"  # reference then edited rendering; the critic instruction is the reward backend's


@dataclass
class EditSummary:
    task: str
    requested: int
    emitted: int = 0
    references_tried: int = 0
    reference_render_failures: dict[str, int] = field(default_factory=dict)
    edits_kept: int = 0
    edits_dropped_no_pixel_change: int = 0
    edits_dropped_render_failure: dict[str, int] = field(default_factory=dict)
    dropped_by_edit: dict[str, int] = field(default_factory=dict)  # which transforms fail or change nothing
    edits_not_applicable: int = 0
    references_without_visible_edit: int = 0
    kept_by_edit: dict[str, int] = field(default_factory=dict)
    kept_by_category: dict[str, int] = field(default_factory=dict)
    kept_by_severity: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool(np.any(a != b))


@dataclass
class EditPair:
    """One targeted-edit pair before it becomes a row: the programs, both renderings and the labels."""

    index: int
    reference_code: str
    edited_code: str
    reference_image: np.ndarray
    edited_image: np.ndarray
    labels: list[EditLabel]
    meta: dict


def iter_edit_pairs(task: str, n: int, config: Optional[DataConfig] = None, split: str = "test",
                    render_fn: Optional[Callable] = None, progress: bool = True,
                    summary: Optional[EditSummary] = None) -> Iterator[EditPair]:
    """Up to `n` pairs of the seeded stream (seed, split, task); what was tried and dropped is counted in
    `summary` (pass one to read it afterwards)."""
    config = config or DataConfig()
    render_fn = render_fn or default_render
    s = summary if summary is not None else EditSummary(task, n)
    ref_fail, edit_fail, by_edit, by_cat, by_sev, dropped = Counter(), Counter(), Counter(), Counter(), Counter(), Counter()
    emitted = 0
    start = time.perf_counter()
    # Edits are HTML-only for tables (a Markdown reference edited as HTML would also change styling).
    table_format = "html" if task == "table" else config.table_format
    bar = tqdm(total=n, desc=f"edits {task}", disable=not progress, unit="pair")
    index = 0
    try:
        while emitted < n and index < n * config.max_attempts_per_pair:
            rng = item_rng(config.seed, f"edits-{split}/{task}", index)
            index += 1
            s.references_tried += 1
            code, meta = generate_program(task, rng, table_format)
            ref = render_fn(task, code, config)
            if not ref.ok:
                ref_fail[getattr(ref.failure, "value", str(ref.failure))] += 1
                continue
            lo, hi = config.edits_per_pair
            target = rng.randint(lo, hi)
            current_code, current_image = code, ref.image
            labels: list[EditLabel] = []
            used: set[str] = set()
            for _ in range(target):
                for _ in range(config.proposals_per_edit):
                    # One edit per category, and a destructive edit only first: a later edit must not erase an
                    # earlier one (e.g. recolour a bar, then delete that series), or its label would be false.
                    try:
                        new_code, label = propose_edit(task, current_code, rng, exclude=used,
                                                       exclude_categories={lab.category for lab in labels},
                                                       allow_destructive=not labels)
                    except EditNotApplicable:
                        s.edits_not_applicable += 1
                        break
                    used.add(label.edit)  # one edit of each kind per pair keeps labels distinct
                    result = render_fn(task, new_code, config)
                    if not result.ok:
                        edit_fail[getattr(result.failure, "value", str(result.failure))] += 1
                        dropped[f"{label.edit}:render_{getattr(result.failure, 'value', result.failure)}"] += 1
                        continue
                    if not _differs(result.image, current_image):
                        s.edits_dropped_no_pixel_change += 1
                        dropped[f"{label.edit}:no_pixel_change"] += 1
                        continue
                    current_code, current_image = new_code, result.image
                    labels.append(label)
                    break
            if not labels or not _differs(current_image, ref.image):
                s.references_without_visible_edit += 1
                continue
            s.edits_kept += len(labels)
            for lab in labels:
                by_edit[lab.edit] += 1
                by_cat[lab.category] += 1
                by_sev[str(lab.severity)] += 1
            emitted += 1
            bar.update(1)
            yield EditPair(index - 1, code, current_code, ref.image, current_image, labels, meta)
    finally:
        bar.close()
        s.emitted = emitted
        s.reference_render_failures, s.edits_dropped_render_failure = dict(ref_fail), dict(edit_fail)
        s.kept_by_edit, s.kept_by_category, s.kept_by_severity = dict(by_edit), dict(by_cat), dict(by_sev)
        s.dropped_by_edit = dict(dropped)
        s.seconds = round(time.perf_counter() - start, 2)


def make_edit_pairs(task: str, n: int, out_dir: Path, config: Optional[DataConfig] = None, split: str = "test",
                    render_fn: Optional[Callable] = None, progress: bool = True) -> EditSummary:
    config = config or DataConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = EditSummary(task, n)
    rows = []
    for pair in iter_edit_pairs(task, n, config, split, render_fn, progress, summary=s):
        errors = [lab.to_dict() for lab in pair.labels]
        rows.append({
            "id": f"{task}-{config.seed}-{pair.index}",
            "data_source": f"visual_erm_rl/edits_{task}",
            "prompt": [{"role": "user", "content": EDIT_PROMPT}],
            "images": [{"bytes": png_bytes(pair.reference_image)}, {"bytes": png_bytes(pair.edited_image)}],
            "ability": f"{task}_critic",
            "reward_model": {"style": "model", "ground_truth": json.dumps(visual_erm_answer(task, pair.labels))},
            "extra_info": {"index": pair.index, "split": split, "task": task, "seed": config.seed,
                           "errors": errors, "reference_code": pair.reference_code,
                           "edited_code": pair.edited_code, "meta": json.dumps(pair.meta)},
        })
    if rows:
        write_parquet(rows, out_dir / f"{task}_edits.parquet")
    write_json(s.to_dict(), out_dir / "summary.json")
    return s
