"""Prompts for training and evaluation: verl-style parquet rows → `Sample`s, in a resumable seeded order.

The order is a function of (seed, epoch) only, and the loader's whole state is (epoch, position), so a run
resumed from a checkpoint draws exactly the batch the interrupted run would have drawn next.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline.data.records import RecordFormatError, decode_image, read_rows
from pipeline.metrics.chart import reference_trace
from pipeline.sample import REFERENCE_TRACE, TASK_KINDS, Sample
from pipeline.tasks import get_task

log = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"  # how verl's multimodal datasets mark the image inside a prompt string


@dataclass(frozen=True)
class Prompt:
    """One dataset row, validated: everything needed to make Samples from it."""

    task: str
    image: np.ndarray
    messages: list[dict[str, Any]]
    ground_truth_code: str | None
    source_id: str  # stable id of the row, e.g. "visual_erm_rl/synth_chart#17"
    extra: dict[str, Any] = field(default_factory=dict)  # copied into each Sample's extra (reference trace)


def structured_messages(prompt: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """verl's `<image>`-in-a-string turns → the HF processor's content lists; exactly one image overall."""
    messages, images = [], 0
    for turn in prompt:
        content = turn.get("content")
        if isinstance(content, list):  # already structured
            images += sum(1 for part in content if part.get("type") == "image")
            messages.append({"role": turn["role"], "content": content})
            continue
        if not isinstance(content, str):
            raise RecordFormatError(f"{where}: prompt content is {type(content).__name__}, not text")
        parts: list[dict[str, Any]] = []
        for i, text in enumerate(content.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                parts.append({"type": "image"})
                images += 1
            if text.strip():
                parts.append({"type": "text", "text": text.strip("\n")})
        messages.append({"role": turn["role"], "content": parts})
    if images != 1:
        raise RecordFormatError(f"{where}: prompt must reference exactly one image, found {images}")
    return messages


def policy_messages(kind: str) -> list[dict]:
    """The user turn exactly as the rollout sees it (dataset row → loader → Sample.messages)."""
    return structured_messages(get_task(kind).verl_prompt(), f"warm-start/{kind}")


def parse_row(row: dict[str, Any], where: str) -> Prompt:
    extra = row.get("extra_info") or {}
    task = extra.get("task") or str(row.get("ability", "")).removesuffix("_to_code")
    if task not in TASK_KINDS:
        raise RecordFormatError(f"{where}: unknown task {task!r} (extra_info.task / ability)")
    images = row.get("images") or []
    if len(images) != 1:
        raise RecordFormatError(f"{where}: expected one image, found {len(images)}")
    image = decode_image(images[0], where)
    messages = structured_messages(row.get("prompt") or [], where)
    ground_truth = (row.get("reward_model") or {}).get("ground_truth")
    source_id = f"{row.get('data_source', '?')}#{extra.get('index', where)}"
    # Charts: the reference's ChartMimic-style trace stored by synth, so evaluation need not re-run its code.
    trace = reference_trace(extra) if task == "chart" else None
    return Prompt(task, image, messages, ground_truth, source_id,
                  extra={REFERENCE_TRACE: trace} if trace else {})


def load_prompts(paths: Iterable[Path]) -> tuple[list[Prompt], list[str]]:
    """All valid prompts of the given parquet files/dirs, and one reason per row that could not be used.

    Bad rows are reported, not fatal: a dataset with a few corrupt images still trains, and the run logs how
    many rows it could not use and why.
    """
    prompts, rejected = [], []
    for path in paths:
        for i, row in enumerate(read_rows(Path(path))):
            where = f"{path} row {i}"
            try:
                prompts.append(parse_row(row, where))
            except RecordFormatError as e:
                rejected.append(str(e))
    for reason in rejected[:5]:
        log.warning("dataset row rejected: %s", reason)
    if len(rejected) > 5:
        log.warning("... and %d more rejected rows", len(rejected) - 5)
    return prompts, rejected


class PromptLoader:
    """Endless seeded batches of prompts; each drawn prompt becomes a Sample with a unique GRPO group id."""

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int):
        if not prompts:
            raise ValueError("no usable prompts in the dataset")
        self.prompts = prompts
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))

    def next_batch(self) -> list[Sample]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            index = int(self._order[self.position])
            prompt = self.prompts[index]
            batch.append(
                Sample(
                    task=prompt.task,  # type: ignore[arg-type]
                    reference_image=prompt.image,
                    prompt_id=f"e{self.epoch}p{self.position}:{prompt.source_id}",
                    messages=prompt.messages,
                    ground_truth_code=prompt.ground_truth_code,
                    extra=copy.deepcopy(prompt.extra),  # a sample may annotate its own copy
                )
            )
            self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": len(self.prompts)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed or state["size"] != len(self.prompts):
            raise ValueError(
                f"checkpoint's data order (seed {state['seed']}, {state['size']} prompts) does not match this "
                f"dataset (seed {self.seed}, {len(self.prompts)} prompts): the resumed run would draw other batches"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
