"""The critic SFT set: (reference image, rendering, labelled discrepancies, answer text) rows, on disk.

Format `visual-erm-rl/critic-sft`, version 1. A directory holding

    manifest.json      {"format", "version", "limits", "rows": {task: {source: n}}, "teachers": {...}, ...}
    chart.parquet  table.parquet  svg.parquet      one file per task kind present

and one row per pair, in the verl-style layout the targeted-edit sets use (so `python -m pipeline.evaluate
critic --data DIR` scores a critic on it unchanged):

    id           "chart/edit/critic-train/17"          unique in the set
    data_source  "visual_erm_rl/critic_sft_chart"
    prompt       [{"role": "user", "content": "<image>\\n<image>"}]   (reference, then rendering)
    images       [{"bytes": PNG}, {"bytes": PNG}]
    ability      "chart_critic"
    answer       the exact text the critic is trained to emit: `schema.serialize_answer(task, errors, limits,
                 fmt)` in the set's answer format (manifest `answer_formats`, per task; ours when absent),
                 compact JSON that the constrained decoder admits and `parse_judgement` accepts
    reward_model {"style": "model", "ground_truth": answer}
    extra_info   {"task", "split", "seed", "index", "source", "teacher", "errors": [{category, severity,
                  location, description}], "reference_code", "candidate_code", "meta": JSON text}

`source` is where the pair comes from: `edit` (targeted edit of the reference program, exact labels),
`clean` (the reference against its own re-rendering or a harmless variation: answer "nothing wrong") or
`natural` (the policy's own rollout, labelled by `teacher`). `teacher` names who labelled the row:
`edit-engine`, `identity`, `structural` or `critic:<backend>:<model>`.

`read_examples` checks every row before training starts and raises `CriticDataError` naming the file and
the row: a corrupt image, a category outside the task's set, an answer that does not parse or does not say
what `errors` says, an empty set.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pyarrow.parquet as pq

from pipeline.critic.config import OURS_FORMAT, AnswerFormat
from pipeline.critic.judgement import parse_judgement
from pipeline.critic.schema import canonical_errors, serialize_answer
from pipeline.data.records import RecordFormatError, decode_image, png_bytes, write_json, write_parquet
from pipeline.sample import CATEGORIES, JudgementLimits

FORMAT = "visual-erm-rl/critic-sft"
VERSION = 1
SOURCES = ("edit", "clean", "natural")
PAIR_PROMPT = "<image>\n<image>"  # reference then rendering; the instruction is the critic's (prompts.py)


class CriticDataError(ValueError):
    """A critic SFT set that cannot be trained on; the message names the file and the row."""


@dataclass
class CriticExample:
    id: str
    task: str
    source: str
    teacher: str
    reference: np.ndarray  # H×W×3 uint8
    rendering: np.ndarray
    errors: list[dict[str, Any]]
    answer: str


def make_row(*, task: str, source: str, teacher: str, index: int, split: str, seed: int,
             reference: np.ndarray | bytes, rendering: np.ndarray | bytes, errors: list[dict[str, Any]],
             limits: JudgementLimits, reference_code: str = "", candidate_code: str = "",
             meta: Optional[dict] = None, answer_format: AnswerFormat | None = None) -> dict[str, Any]:
    """One row of the set; `errors` are fitted to the answer schema of `answer_format` (None = ours), so
    `extra_info.errors` is exactly what `answer` says. Raises ValueError for labels the schema cannot express."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    fmt = answer_format or OURS_FORMAT
    errors = canonical_errors(task, errors, limits, fmt)
    answer = serialize_answer(task, errors, limits, fmt)

    def image(x):
        return {"bytes": x if isinstance(x, (bytes, bytearray)) else png_bytes(x)}

    return {
        "id": f"{task}/{source}/{split}/{index}",
        "data_source": f"visual_erm_rl/critic_sft_{task}",
        "prompt": [{"role": "user", "content": PAIR_PROMPT}],
        "images": [image(reference), image(rendering)],
        "ability": f"{task}_critic",
        "answer": answer,
        "reward_model": {"style": "model", "ground_truth": answer},
        "extra_info": {"task": task, "split": split, "seed": seed, "index": index, "source": source,
                       "teacher": teacher, "errors": errors, "reference_code": reference_code,
                       "candidate_code": candidate_code, "meta": json.dumps(meta or {})},
    }


def write_dataset(rows: Iterable[dict[str, Any]], out_dir: Path, limits: JudgementLimits,
                  extra: Optional[dict[str, Any]] = None,
                  answer_formats: Optional[dict[str, AnswerFormat]] = None) -> dict[str, Any]:
    """Write rows (any order, any tasks) as one parquet file per task plus the manifest; returns it.
    `answer_formats` names the format each task's answers were written in (None or a missing task: ours)."""
    out_dir = Path(out_dir)
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["extra_info"]["task"], []).append(row)
    if not by_task:
        raise CriticDataError(f"{out_dir}: no rows to write (an empty critic set cannot train anything)")
    counts: dict[str, dict[str, int]] = {}
    teachers: Counter = Counter()
    for task, task_rows in sorted(by_task.items()):
        # Parquet needs one type per column: a file whose rows all list no error would infer list<null>.
        write_parquet(task_rows, out_dir / f"{task}.parquet")
        counts[task] = dict(Counter(r["extra_info"]["source"] for r in task_rows))
        teachers.update(r["extra_info"]["teacher"] for r in task_rows)
    formats = {task: (answer_formats or {}).get(task, OURS_FORMAT).model_dump() for task in sorted(by_task)}
    manifest = {"format": FORMAT, "version": VERSION, "limits": limits.model_dump(), "answer_formats": formats,
                "rows": counts,
                "total_rows": sum(len(r) for r in by_task.values()), "teachers": dict(teachers),
                "files": {task: f"{task}.parquet" for task in by_task}, **(extra or {})}
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    file = path / "manifest.json"
    if not file.is_file():
        raise CriticDataError(f"{path}: not a critic SFT set (no manifest.json); build one with "
                              "`python -m pipeline.critic data`")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CriticDataError(f"{file}: not JSON: {e.msg}") from None
    if manifest.get("format") != FORMAT:
        raise CriticDataError(f"{file}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise CriticDataError(f"{file}: version {manifest.get('version')!r}; this code reads version {VERSION}")
    return manifest


def answer_formats(manifest: dict[str, Any]) -> dict[str, AnswerFormat]:
    """The answer format of each task's answers (sets written before formats existed: ours)."""
    written = manifest.get("answer_formats") or {}
    try:
        return {task: AnswerFormat.model_validate(written[task]) if task in written else OURS_FORMAT
                for task in CATEGORIES}
    except ValueError as e:
        raise CriticDataError(f"manifest answer_formats: {e}") from None


def _check_row(row: dict[str, Any], where: str, limits: JudgementLimits,
               fmt: AnswerFormat = OURS_FORMAT) -> CriticExample:
    info = row.get("extra_info") or {}
    task = info.get("task")
    if task not in CATEGORIES:
        raise CriticDataError(f"{where}: task {task!r} is not one of {sorted(CATEGORIES)}")
    images = row.get("images") or []
    if len(images) != 2:
        raise CriticDataError(f"{where}: needs 2 images (reference, rendering), has {len(images)}")
    try:
        reference = decode_image(images[0], f"{where} reference image")
        rendering = decode_image(images[1], f"{where} rendering")
    except RecordFormatError as e:
        raise CriticDataError(str(e)) from None
    errors = list(info.get("errors") or [])
    for k, e in enumerate(errors):
        if e.get("category") not in CATEGORIES[task]:
            raise CriticDataError(f"{where}: error {k} has category {e.get('category')!r}, not one of the "
                                  f"{task} categories {list(CATEGORIES[task])}")
    answer = row.get("answer")
    if not isinstance(answer, str):
        raise CriticDataError(f"{where}: no answer text")
    judgement = parse_judgement(answer, task, limits, fmt=fmt)
    if not judgement.valid:
        raise CriticDataError(f"{where}: the answer is not a valid {task} judgement under the configured "
                              f"limits and the set's answer format ({judgement.reason})")
    if judgement.errors != errors:
        raise CriticDataError(f"{where}: the answer text and extra_info.errors disagree")
    source, teacher = info.get("source"), info.get("teacher")
    if source not in SOURCES:
        raise CriticDataError(f"{where}: source {source!r} is not one of {SOURCES}")
    return CriticExample(str(row.get("id")), task, source, str(teacher), reference, rendering, errors, answer)


def read_examples(path: Path, limits: JudgementLimits, tasks: Optional[Iterable[str]] = None,
                  sources: Optional[Iterable[str]] = None) -> list[CriticExample]:
    """Every row of the set at `path` (optionally only some tasks / sources), each checked."""
    path = Path(path)
    manifest = read_manifest(path)
    formats = answer_formats(manifest)
    wanted_tasks = set(tasks) if tasks is not None else set(CATEGORIES)
    wanted_sources = set(sources) if sources is not None else set(SOURCES)
    examples: list[CriticExample] = []
    seen: set[str] = set()
    for task, name in sorted(manifest.get("files", {}).items()):
        if task not in wanted_tasks:
            continue
        file = path / name
        if not file.is_file():
            raise CriticDataError(f"{file}: listed in the manifest but missing")
        for i, row in enumerate(pq.read_table(file).to_pylist()):
            where = f"{file.name} row {i} (id {row.get('id')!r})"
            example = _check_row(row, where, limits, formats[task])
            if example.task != task:
                raise CriticDataError(f"{where}: task {example.task!r} in the {task} file")
            if example.id in seen:
                raise CriticDataError(f"{where}: duplicate id")
            seen.add(example.id)
            if example.source in wanted_sources:
                examples.append(example)
    if not examples:
        raise CriticDataError(f"{path}: no rows for tasks {sorted(wanted_tasks)} and sources "
                              f"{sorted(wanted_sources)} (the set is empty)")
    return examples
