"""Teachers: who labels the policy's natural errors for the critic SFT set.

A teacher gets (task, reference program, candidate program, reference image, candidate rendering) items and
returns, per item, a discrepancy list in the critic's answer shape, or a `TeacherFailure` with the reason
(the row is then left out of the set and counted, never written with a made-up label).

  structural   the built-in teacher for the project's synthetic tasks: diffs the two programs' structure
               (pipeline/critic/structural); needs both programs, not the images
  critic       any critic backend (`pipeline.critic.backends`): an OpenAI-compatible endpoint a user points at
               (e.g. a large VLM behind `vllm serve`), or a trained checkpoint through hf / vllm; needs images
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Protocol

import numpy as np
from pydantic import model_validator

from pipeline.critic.backends import JudgeRequest, make_backend
from pipeline.critic.config import RewardConfig
from pipeline.critic.structural import StructuralDiffError, StructuralTeacher
from pipeline.models.config import ModelConfig
from pipeline.schema import Strict


class TeacherConfig(Strict):
    kind: Literal["structural", "critic"] = "structural"
    reward: dict[str, Any] = {}  # kind=critic: a RewardConfig mapping (backend + its section)
    model_path: Optional[str] = None  # kind=critic with hf / vllm: a local checkpoint (None = the tiny model)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "critic" and not self.reward.get("backend"):
            raise ValueError("teacher.kind=critic needs teacher.reward.backend (hf, vllm or openai)")
        return self


@dataclass
class TeacherItem:
    task: str
    reference_code: str
    candidate_code: str
    reference_image: np.ndarray
    candidate_image: np.ndarray


@dataclass
class TeacherFailure:
    reason: str


class Teacher(Protocol):
    name: str

    def label(self, items: list[TeacherItem]) -> list[list[dict] | TeacherFailure]: ...

    def close(self) -> None: ...


class StructuralLabeler:
    """The structural teacher behind the Teacher interface."""

    name = "structural"

    def __init__(self):

        self.teacher = StructuralTeacher()

    def label(self, items: list[TeacherItem]) -> list[list[dict] | TeacherFailure]:

        out: list[list[dict] | TeacherFailure] = []
        for item in items:
            try:
                out.append(self.teacher.label(item.task, item.reference_code, item.candidate_code))
            except StructuralDiffError as e:
                out.append(TeacherFailure(f"structural:{e}"))
        return out

    def close(self) -> None:
        pass


class CriticLabeler:
    """A critic backend as teacher: its valid judgements are the labels; invalid ones are failures."""

    def __init__(self, cfg: TeacherConfig):

        reward = RewardConfig.model_validate(cfg.reward)
        self.backend = make_backend(reward, ModelConfig(path=cfg.model_path) if cfg.model_path else None)
        model = reward.openai.model if reward.backend == "openai" else (cfg.model_path or "tiny")
        self.name = f"critic:{reward.backend}:{model}"

    def label(self, items: list[TeacherItem]) -> list[list[dict] | TeacherFailure]:

        judgements = self.backend.score([JudgeRequest(i.task, i.reference_image, i.candidate_image)
                                         for i in items])
        return [j.errors if j.valid else TeacherFailure(f"invalid_judgement:{j.reason}") for j in judgements]

    def close(self) -> None:
        self.backend.close()


def make_teacher(cfg: TeacherConfig) -> Teacher:
    return StructuralLabeler() if cfg.kind == "structural" else CriticLabeler(cfg)
