"""Reward terms: one class per formula or baseline, selected and weighted in `reward.formula.terms`.

A term works in two phases so that batch-normalised formulas compose with per-sample ones:
  * `measure_batch` (per sample, where the inputs are: on a reward actor) returns raw statistics, e.g. the
    severity total S of a judgement or an SSIM value, or `Unavailable(reason)` when it cannot score a sample;
  * `values` (over the whole scored batch of one task, cheap, on the caller) turns the statistics into the
    term's reward, e.g. clip(1 − S / max S, 0, 1).
A sample that fails a failure rule is never measured: every term gives it `failure_value(task)`.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any

from pipeline.critic.config import RewardConfig, TermConfig
from pipeline.critic.judgement import Judgement
from pipeline.sample import TASK_KINDS, Sample

# An Unavailable reason with this prefix is an infrastructure failure (a crashed encoder, the critic's engine
# or endpoint down), not something the policy did: the sample is excluded from the update, never scored.
INFRASTRUCTURE = "infrastructure:"
# Judgement reasons (pipeline/critic/backends/base.py) for answers the critic never produced.
NO_ANSWER_REASONS = ("backend:", "transport:")


@dataclass(frozen=True)
class Unavailable:
    reason: str


class Term(ABC):
    name = "term"
    supported_tasks: tuple[str, ...] = TASK_KINDS
    needs_judgement = False

    def __init__(self, cfg: RewardConfig, term_cfg: TermConfig):
        self.cfg = cfg
        self.term_cfg = term_cfg
        self.weight = term_cfg.weight

    def applies(self, task: str) -> bool:
        allowed = self.term_cfg.tasks
        return task in self.supported_tasks and (allowed is None or task in allowed)

    def measure(self, sample: Sample, judgement: Judgement | None) -> dict[str, float] | Unavailable:
        raise NotImplementedError

    def measure_batch(self, samples: list[Sample],
                      judgements: list[Judgement | None]) -> list[dict[str, float] | Unavailable]:
        out = []
        for s, j in zip(samples, judgements):
            try:
                out.append(self.measure(s, j))
            except Exception as e:  # a term's bug or odd input costs that sample's term, never the batch
                out.append(Unavailable(f"{INFRASTRUCTURE}term_error:{type(e).__name__}: {e}"[:200]))
        return out

    def values(self, task: str, measures: list[dict[str, float]]) -> list[float]:
        """The term's reward for each measured sample of one task in the batch (default: its `value`)."""
        return [m["value"] for m in measures]

    def failure_value(self, task: str) -> float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "tasks": self.term_cfg.tasks}
