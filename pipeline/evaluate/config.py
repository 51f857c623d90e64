"""Configuration of critic evaluation (`python -m pipeline.evaluate critic --critic CONFIG.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from pipeline.schema import Strict, load_section


class CriticSource(Strict):
    """Where the critic's discrepancy lists come from.

    predictions: a JSONL file of {"id": ..., "errors": [...]} (or {"id", "pred_json": {...}}) written earlier;
    records:     the benchmark file itself carries them (VC-RewardBench results layout, `pred_json`);
    reward_backend: the project's reward backend (`pipeline.critic`: hf / vllm / openai / fingerprint) built
                 from `reward` (a RewardConfig mapping) and `model_path` (a local Visual-ERM checkpoint);
    callable:    `target` = "module:function", called as fn(task, reference_rgb, candidate_rgb) and returning
                 the critic's JSON (dict, list or text);
    oracle / empty: sanity baselines (the annotations themselves → F1 1.0; nothing found);
    trivial / pixel / structural: the non-learned critics of `pipeline/critic/baselines.py` — the floor a
                 trained critic must clear. trivial and pixel are fitted on `fit_data` (a training critic SFT
                 set: statistics of its labels and images); structural diffs the two programs the record
                 carries (reference_code / candidate_code) and needs no fitting.
    """

    kind: Literal["predictions", "records", "reward_backend", "callable", "oracle", "empty",
                  "trivial", "pixel", "structural"] = "predictions"
    path: Optional[str] = None
    fit_data: Optional[str] = None  # trivial / pixel: the training critic set their statistics come from
    target: Optional[str] = None
    reward: dict[str, Any] = {}  # validated as pipeline.critic.config.RewardConfig when used
    model_path: Optional[str] = None
    batch_size: int = Field(8, ge=1)  # items per critic call (the backend batches pairs on the device)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "predictions" and not self.path:
            raise ValueError("critic.kind=predictions needs critic.path")
        if self.kind == "callable" and not self.target:
            raise ValueError("critic.kind=callable needs critic.target ('module:function')")
        if self.kind in ("trivial", "pixel") and not self.fit_data:
            raise ValueError(f"critic.kind={self.kind} needs critic.fit_data (a training critic set)")
        return self


class JudgeConfig(Strict):
    """The LLM judge of `matcher.kind: official` (one call per item aligning the two error lists, as the
    official evaluation) or `llm_judge` (yes / partial / no per same-category pair): a reward backend (hf /
    vllm / openai) asked text-only, schema-constrained questions. For `official`, no `reward.backend` = the
    deterministic CPU fallback judge (word overlap, one-to-one; pipeline/metrics/critic.py)."""

    reward: dict[str, Any] = {}  # a RewardConfig mapping (backend + its section), validated when used
    prompt_file: Optional[str] = None  # official: the aligner's instruction ({task}, {predicted}, {annotated})
    align_tokens_per_error: int = Field(48, ge=8)  # official: answer budget = 32 + this × (#pred + #annotated)
    model_path: Optional[str] = None  # local checkpoint for hf / vllm; None = the tiny model built offline
    max_new_tokens: int = Field(48, ge=8)  # a verdict is ~10 tokens; the schema bounds it
    max_attempts: int = Field(2, ge=1)  # asks per pair before its answer counts as a judge failure ("no")
    batch_size: int = Field(64, ge=1)  # pairs per backend call


class MatcherConfig(Strict):
    """official (default): as VC-RewardBench's evaluation, one judge answer per item aligns the whole lists,
    no same-category requirement (`judge`; without a judge backend the deterministic word-overlap fallback);
    deterministic: same category + location/description word overlap (thresholds below);
    llm_judge: same category + an LLM's yes / partial / no verdict per pair (`judge`)."""

    kind: Literal["official", "deterministic", "llm_judge"] = "official"
    full_threshold: float = Field(0.5, ge=0, le=1)
    partial_threshold: float = Field(0.25, ge=0, le=1)
    judge: JudgeConfig = JudgeConfig()

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "llm_judge" and not self.judge.reward.get("backend"):
            raise ValueError("matcher.kind=llm_judge needs matcher.judge.reward.backend (hf, vllm or openai)")
        if self.partial_threshold > self.full_threshold:
            raise ValueError("matcher.partial_threshold must not exceed matcher.full_threshold")
        return self


class CriticEvalConfig(Strict):
    """Defaults reproduce the official VC-RewardBench counting (evaluation/evaluation.py); `counting: strict`
    with `matcher.kind: deterministic | llm_judge` is our stricter variant (same category required,
    precision/recall over all predicted/annotated items, unknown categories count as false positives,
    failed-judge pairs count as "no")."""

    critic: CriticSource = CriticSource(kind="oracle")
    matcher: MatcherConfig = MatcherConfig()
    # official: FP/FN = unmatched items, unknown categories and failed-judge items dropped, Pearson per type.
    # None: official with the official matcher, strict with the others.
    counting: Optional[Literal["official", "strict"]] = None
    # official counting: which categories survive. normalized = any spelling of the task's categories
    # ("data", "Data_Error"); exact = the official literal filter ("data_error" only: our format keeps nothing).
    category_filter: Literal["normalized", "exact"] = "normalized"

    @model_validator(mode="after")
    def _pairs(self):
        official = self.matcher.kind == "official"
        if self.counting is None:
            self.counting = "official" if official else "strict"
        elif (self.counting == "official") != official:
            raise ValueError("counting=official goes with matcher.kind=official, counting=strict with "
                             "matcher.kind=deterministic or llm_judge")
        return self


def load_critic_config(path: str | Path) -> CriticEvalConfig:
    # Not merged onto the defaults: `counting` is derived from `matcher.kind` when the file leaves it unset.
    return load_section(CriticEvalConfig, path, merge_defaults=False)
