"""The one record that flows dataset → rollout → render → reward → trainer.

Each stage fills in its own fields and never removes a sample: a stage that fails records why in
`failure` (and the reward stage turns that into an explicit failure reward), so every sample that entered the
system is accounted for at the end.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from pipeline.schema import Strict

TaskKind = Literal["chart", "table", "svg"]

# Sample.extra keys the data loader fills from the dataset row: the prompt's own annotations (a revision turn
# of the same prompt keeps them; everything else in `extra` describes one answer).
REFERENCE_TRACE = "reference_chart_trace"  # the reference chart's ChartMimic-style trace
PROMPT_EXTRA_KEYS = (REFERENCE_TRACE,)
TASK_KINDS: tuple[TaskKind, ...] = ("chart", "table", "svg")

# The paper's discrepancy categories per task (Visual-ERM / VC-RewardBench), without the "_error" suffix the
# released model writes; the critic's schema, prompts, parsers, metrics and the targeted edits all use these.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "chart": ("structure", "data", "text", "style"),
    "table": ("layout", "text", "numeric"),
    "svg": ("structure", "shape", "style", "text_symbol"),
}
SEVERITIES = (1, 2, 3)  # 1 minor, 2 medium, 3 severe


@dataclass(frozen=True)
class Discrepancy:
    """One difference between a reference image and a rendering, as Visual-ERM lists it. A critic's
    judgement, a targeted edit's label (`EditLabel`), a benchmark annotation and `Sample.discrepancies`
    (where it travels as `to_dict()`, through Ray and JSON) are all this record."""

    category: str  # one of CATEGORIES[task], or "invalid:<raw>" for a category outside the task's set
    severity: int  # 1 minor, 2 medium, 3 severe; 0 if the critic gave none we can read
    location: str = ""
    description: str = ""

    @property
    def valid(self) -> bool:
        return not self.category.startswith("invalid:")

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "severity": self.severity, "location": self.location,
                "description": self.description}


class JudgementLimits(Strict):
    """Bounds of a discrepancy list, written into the critic's JSON Schema. They bound the length of every
    valid answer, so constrained decoding always finishes inside `max_new_tokens` when that is ≥
    `worst_case_tokens` (checked at start)."""

    max_errors: int = Field(24, ge=0)
    max_location_chars: int = Field(120, ge=1)
    max_description_chars: int = Field(400, ge=1)


@dataclass
class Sample:
    task: TaskKind
    reference_image: np.ndarray  # HxWx3 uint8 RGB
    prompt_id: str  # GRPO group id: all samples drawn for one prompt share it
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat messages given to the policy
    ground_truth_code: Optional[str] = None
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Images the prompt shows after the reference, in message order: a revision turn's earlier rendering
    # (pipeline/revision.py). Every {"type": "image"} part of `messages` stands for one of `prompt_images`.
    feedback_images: list[np.ndarray] = field(default_factory=list)
    turn: int = 0  # 0: a first answer; k: the k-th revision of one (pipeline/revision.py)

    # rollout
    response_text: Optional[str] = None
    prompt_ids: Optional[list[int]] = None
    response_ids: Optional[list[int]] = None
    response_logprobs: Optional[list[float]] = None
    policy_version: Optional[int] = None

    # extraction + rendering
    code: Optional[str] = None
    rendered_image: Optional[np.ndarray] = None  # HxWx3 uint8 RGB when rendering succeeded
    render_error: Optional[str] = None  # typed failure name, e.g. "timeout", "syntax_error"

    # reward
    reward: Optional[float] = None
    reward_breakdown: dict[str, float] = field(default_factory=dict)
    discrepancies: list[dict[str, Any]] = field(default_factory=list)

    # the first stage that could not do its job, and why ("render:timeout", "reward:invalid_judgement", ...)
    failure: Optional[str] = None
    # An infrastructure failure (a render or reward actor died, the critic's engine or endpoint failed) that
    # survived the retries: not the policy's doing, so the sample gets no reward (`reward` stays None) and
    # is masked out of the update; counted by reason ("render_crashed", "reward_unavailable", "critic", ...).
    excluded: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_images(self) -> list[np.ndarray]:
        """The images of the prompt, in the order its image parts appear: the reference, then feedback."""
        return [self.reference_image, *self.feedback_images]

    def fail(self, stage: str, reason: str) -> "Sample":
        if self.failure is None:
            self.failure = f"{stage}:{reason}"
        return self
