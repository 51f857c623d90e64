"""Build a critic SFT set (`pipeline/critic/training/dataset.py` format) from the project's own data engine.

Three sources, each counted in the manifest:
  edit     targeted edits of synthetic reference programs (`pipeline/data/pairs.py`): 1–3 visible errors per
           pair with exact labels (category, severity, location, description);
  clean    "nothing is wrong" pairs: the reference against its own re-rendering, or against a rendering at
           another size (a harmless resolution change the critic must not report), answer = empty list;
  natural  the policy's own rollouts on held-apart references, rendered in the sandbox and labelled by a
           teacher (`teachers.py`: the built-in structural teacher, or any critic backend). A rollout with no
           code, or whose code does not render or renders blank, is no critic pair (the reward's failure rules
           score it) and is counted, not written.

Every stream is seeded by (seed, split, task, index), so a held-out set (another split) never repeats a
training pair. Answers are written by `schema.serialize_answer` in the configured answer format
(`answer_format`: ours or the released model's), the text the constrained decoder admits under that format.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from tqdm import tqdm

from pipeline.critic.config import AnswerFormat, resolve_format
from pipeline.critic.training.dataset import make_row, write_dataset
from pipeline.critic.training.teachers import TeacherConfig, TeacherFailure, TeacherItem, make_teacher
from pipeline.data.compact import compact_program
from pipeline.data.config import DataConfig
from pipeline.data.generators import generate_program, item_rng
from pipeline.data.loader import policy_messages
from pipeline.data.pairs import EditSummary, iter_edit_pairs
from pipeline.models.config import ModelsConfig
from pipeline.render import render
from pipeline.render.image import is_blank
from pipeline.rollout.config import SamplingConfig
from pipeline.rollout.hf import HFRollout
from pipeline.sample import TASK_KINDS, JudgementLimits, Sample, TaskKind
from pipeline.schema import Strict
from pipeline.tasks import get_task

log = logging.getLogger(__name__)


class CriticDataConfig(Strict):
    """What goes into one critic SFT set (`python -m pipeline.critic data`)."""

    tasks: list[TaskKind] = list(TASK_KINDS)
    split: str = "critic-train"  # names the random streams: another split never repeats a pair
    seed: int = 0
    edits_per_task: int = Field(200, ge=0)
    clean_per_task: int = Field(40, ge=0)
    natural_per_task: int = Field(0, ge=0)  # labelled policy rollouts per task (needs a policy)
    natural_samples_per_prompt: int = Field(2, ge=1)
    # Which references the policy is asked to reproduce for natural errors: the compact programs a tiny
    # policy is warm-started on (it gets some of them nearly right), the full synthetic ones, or both in turn.
    natural_references: Literal["compact", "synth", "both"] = "both"
    natural_max_new_tokens: int = Field(96, ge=8)
    natural_temperature: float = Field(1.0, ge=0)
    # Clean pairs: every other one is drawn at this scale of the reference's size (a harmless change).
    clean_rescale: float = Field(0.75, gt=0)
    data: DataConfig = DataConfig()
    limits: JudgementLimits = JudgementLimits()
    # The answer format the targets are written in (every task): ours | released | a YAML file | the fields.
    # It must be the format the critic will be served with (reward.tasks.<task>.answer_format).
    answer_format: str | AnswerFormat = "ours"
    teacher: TeacherConfig = TeacherConfig()

    def format_for(self, task: str) -> AnswerFormat:
        return resolve_format(self.answer_format, task)


def _render(task: str, code: str, data: DataConfig, size=None):

    return render(task, code, size=size or data.size_for(task), timeout_s=data.render_timeout_s)


def edit_rows(cfg: CriticDataConfig, task: str, progress: bool) -> tuple[list[dict], dict]:

    summary = EditSummary(task, cfg.edits_per_task)
    data = cfg.data.model_copy(update={"seed": cfg.seed})
    rows = [make_row(task=task, source="edit", teacher="edit-engine", index=p.index, split=cfg.split,
                     seed=cfg.seed, reference=p.reference_image, rendering=p.edited_image,
                     errors=[lab.to_dict() for lab in p.labels], limits=cfg.limits,
                     reference_code=p.reference_code, candidate_code=p.edited_code,
                     answer_format=cfg.format_for(task))
            for p in iter_edit_pairs(task, cfg.edits_per_task, data, split=f"{cfg.split}-edit", progress=progress,
                                     summary=summary)]
    return rows, summary.to_dict()


def clean_rows(cfg: CriticDataConfig, task: str, progress: bool) -> tuple[list[dict], dict]:

    rows, failures = [], Counter()
    table_format = "html" if task == "table" else cfg.data.table_format
    for index in tqdm(range(cfg.clean_per_task), desc=f"clean {task}", disable=not progress, unit="pair"):
        code, _ = generate_program(task, item_rng(cfg.seed, f"{cfg.split}-clean/{task}", index), table_format)
        ref = _render(task, code, cfg.data)
        if not ref.ok:
            failures[f"reference_{getattr(ref.failure, 'value', ref.failure)}"] += 1
            continue
        variant = "rerender"
        size = None
        if index % 2:  # the same program at another resolution: nothing a critic should report
            h, w = ref.image.shape[:2]
            size, variant = (max(16, round(w * cfg.clean_rescale)), max(16, round(h * cfg.clean_rescale))), "rescaled"
        again = _render(task, code, cfg.data, size=size)
        if not again.ok:
            failures[f"variant_{getattr(again.failure, 'value', again.failure)}"] += 1
            continue
        rows.append(make_row(task=task, source="clean", teacher="identity", index=index, split=cfg.split,
                             seed=cfg.seed, reference=ref.image, rendering=again.image, errors=[],
                             limits=cfg.limits, reference_code=code, candidate_code=code,
                             meta={"variant": variant}, answer_format=cfg.format_for(task)))
    return rows, {"requested": cfg.clean_per_task, "emitted": len(rows), "failures": dict(failures)}


def _natural_reference(cfg: CriticDataConfig, task: str, index: int) -> tuple[str, str]:

    kind = cfg.natural_references if cfg.natural_references != "both" else ("compact", "synth")[index % 2]
    if kind == "compact":
        return compact_program(task, index, seed=cfg.seed, split=f"{cfg.split}-natural"), kind
    return generate_program(task, item_rng(cfg.seed, f"{cfg.split}-natural/{task}", index))[0], kind


def natural_rows(cfg: CriticDataConfig, task: str, models: ModelsConfig, teacher, progress: bool
                 ) -> tuple[list[dict], dict]:
    """Policy rollouts on fresh references, rendered and labelled by the teacher, until `natural_per_task`
    rows exist or a bounded number of prompts was tried."""

    spec = get_task(task)
    sampling = SamplingConfig(n=cfg.natural_samples_per_prompt, temperature=cfg.natural_temperature,
                              max_new_tokens=cfg.natural_max_new_tokens)
    policy = HFRollout(models, sampling, seed=cfg.seed)
    counts: Counter = Counter()
    rows: list[dict] = []
    bar = tqdm(total=cfg.natural_per_task, desc=f"natural {task}", disable=not progress, unit="pair")
    index, max_prompts = 0, 8 * cfg.natural_per_task
    while len(rows) < cfg.natural_per_task and index < max_prompts:
        prompts, refs = [], {}
        for _ in range(4):  # a few prompts per generate call
            code, kind = _natural_reference(cfg, task, index)
            ref = _render(task, code, cfg.data)
            index += 1
            if not ref.ok:
                counts["reference_render_failed"] += 1
                continue
            pid = f"natural/{task}/{index - 1}"
            refs[pid] = (code, kind, ref.image, index - 1)
            prompts.append(Sample(task=task, reference_image=ref.image, prompt_id=pid,
                                  messages=policy_messages(task)))
        items, where = [], []
        for k, sample in enumerate(policy.generate(prompts) if prompts else []):
            counts["rollouts"] += 1
            extraction = spec.extract_code(sample.response_text)
            if not extraction.ok:
                counts["no_code"] += 1
                continue
            result = _render(task, extraction.code, cfg.data)
            if not result.ok:
                counts[f"render_{getattr(result.failure, 'value', result.failure)}"] += 1
                continue
            if _is_blank(result.image):
                counts["blank"] += 1
                continue
            code, kind, ref_image, ref_index = refs[sample.prompt_id]
            items.append(TeacherItem(task, code, extraction.code, ref_image, result.image))
            where.append((ref_index, kind, k))
        for item, (ref_index, kind, k), labels in zip(items, where, teacher.label(items) if items else []):
            if len(rows) >= cfg.natural_per_task:
                break
            if isinstance(labels, TeacherFailure):
                counts[f"teacher_failed:{labels.reason.split(':', 1)[0]}"] += 1
                continue
            rows.append(make_row(task=task, source="natural", teacher=teacher.name,
                                 index=ref_index * cfg.natural_samples_per_prompt + k % cfg.natural_samples_per_prompt,
                                 split=cfg.split, seed=cfg.seed, reference=item.reference_image,
                                 rendering=item.candidate_image, errors=labels, limits=cfg.limits,
                                 reference_code=item.reference_code, candidate_code=item.candidate_code,
                                 meta={"reference_kind": kind}, answer_format=cfg.format_for(task)))
            bar.update(1)
    bar.close()
    return rows, {"requested": cfg.natural_per_task, "emitted": len(rows), "prompts_tried": index, **counts}


def _is_blank(image) -> bool:

    return is_blank(image)


def build_critic_dataset(cfg: CriticDataConfig, out_dir: Path, models: Optional[ModelsConfig] = None,
                         progress: bool = True) -> dict:
    """Write the set to `out_dir`; returns its manifest (with per-source summaries)."""
    start = time.perf_counter()
    rows: list[dict] = []
    summaries: dict[str, dict] = {}
    teacher = make_teacher(cfg.teacher) if cfg.natural_per_task else None
    try:
        for task in cfg.tasks:
            task_summary = {}
            if cfg.edits_per_task:
                r, task_summary["edit"] = edit_rows(cfg, task, progress)
                rows += r
            if cfg.clean_per_task:
                r, task_summary["clean"] = clean_rows(cfg, task, progress)
                rows += r
            if cfg.natural_per_task:
                r, task_summary["natural"] = natural_rows(cfg, task, models or ModelsConfig(), teacher, progress)
                rows += r
            summaries[task] = task_summary
    finally:
        if teacher is not None:
            teacher.close()
    random.Random(f"{cfg.seed}/{cfg.split}/order").shuffle(rows)
    manifest = write_dataset(rows, out_dir, cfg.limits, extra={
        "split": cfg.split, "seed": cfg.seed, "config": cfg.model_dump(mode="json"), "summaries": summaries,
        "seconds": round(time.perf_counter() - start, 1)}, answer_formats={t: cfg.format_for(t) for t in cfg.tasks})
    log.info("critic set %s: %d rows in %.0f s", out_dir, manifest["total_rows"], manifest["seconds"])
    return manifest


__all__ = ["CriticDataConfig", "build_critic_dataset"]
