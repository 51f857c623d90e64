"""Reflection & revision: the critic's feedback turned into a better program.

One round: the previous answer's code goes back to the policy as its own assistant turn, followed by a user
turn that shows what that code drew (its rendering, a second image part) and what the critic found wrong (the
discrepancies, most severe first) — or the render error, "blank image", "no code"; the policy answers again,
and the new answer is rendered and judged like any other. Up to `rounds` rounds. An item stops early once the
critic lists nothing for a rendered answer (`stop_when_clean`). Every attempt stays recorded; the answer kept
is the best by reward (ties: the earlier) or the last.

Each round's prompt holds only the latest attempt (first prompt, that answer, its feedback), so the context
stays bounded whatever the number of rounds. The feedback texts live with the task prompts
(`pipeline/tasks/prompts.py`: REVISION_PROMPTS).

Pure logic: the caller passes `generate` (one answer per prompt), `render` and `judge` callables — the driver's
actor pools, the evaluate command's in-process renderer and scorer, or test fakes. `judge` may finalise
rewards (test time: `reward.score`) or only measure them (training: `reward_stage`, finalised with the whole
step batch); `feedback_for` reads either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from pipeline.sample import PROMPT_EXTRA_KEYS, Sample
from pipeline.schema import Strict
from pipeline.tasks import get_task
from pipeline.tasks.prompts import DISCREPANCY_LINE, NO_DISCREPANCY_LINE, REVISION_PROMPTS

FeedbackKind = Literal["clean", "discrepancies", "unjudged", "render_error", "blank_image", "no_code"]
# What the policy is told: "critic" = the renderer's failures and the critic's discrepancies; "render_only" = the
# renderer's failures only (a rendered answer is shown with "compare it with the reference", whatever the
# critic found): the baseline that says whether the critic's words help revision.
FeedbackMode = Literal["critic", "render_only"]
Keep = Literal["best", "last"]
SEVERITY_FIRST = -1  # sort key sign: most severe discrepancies are listed first
_ROUND_SUFFIX = re.compile(r"@r\d+$")


class RevisionConfig(Strict):
    """How an answer is revised with the critic's feedback (pipeline/revision.py), at test time and in training."""

    keep: Literal["best", "last"] = "best"  # test time: the answer kept, by critic reward (ties: the earlier)
    stop_when_clean: bool = True  # no more rounds once the critic lists nothing for a rendered answer
    max_listed: int = Field(8, ge=1)  # discrepancies shown in the feedback, most severe first
    feedback: FeedbackMode = "critic"  # render_only: the critic's discrepancies withheld (a baseline)


@dataclass(frozen=True)
class Feedback:
    kind: FeedbackKind
    discrepancies: tuple[dict[str, Any], ...] = ()
    detail: str = ""


def _verdict(sample: Sample) -> tuple[str | None, dict[str, Any] | None]:
    """(failure rule that fired, judgement dict with `valid` and `errors`), from a finalised sample or from the
    per-sample phase's Partial still waiting in `extra["reward_partial"]`."""
    partial = sample.extra.get("reward_partial")
    if partial is not None:  # measured, not finalised yet (training)
        return partial.failure, partial.judgement
    failure = sample.failure.split(":", 1)[1] if sample.failure and sample.failure.startswith("reward:") else None
    judgement = sample.extra.get("judgement")
    if judgement is None:
        return failure, None
    return failure, {**judgement, "errors": sample.discrepancies}


def feedback_for(sample: Sample, mode: FeedbackMode = "critic") -> Feedback:
    """What the renderer and the critic said about an answer that has been rendered and judged (with mode
    render_only, what the renderer said: a rendered, non-blank answer is `unjudged`)."""
    if not (sample.code or "").strip():
        return Feedback("no_code")
    if sample.rendered_image is None:
        detail = str(sample.extra.get("render_detail") or "").strip() or "no details"
        return Feedback("render_error", detail=f"{sample.render_error or 'no image'}: {detail}")
    failure, judgement = _verdict(sample)
    if failure == "blank_image":
        return Feedback("blank_image")
    if mode == "render_only":
        return Feedback("unjudged", detail="render-only feedback")
    if judgement is None or not judgement.get("valid"):
        reason = (judgement or {}).get("reason") or "not judged"
        return Feedback("unjudged", detail=str(reason))
    errors = list(judgement.get("errors") or [])
    if not errors:
        return Feedback("clean")
    return Feedback("discrepancies", tuple(errors))


def feedback_text(task: str, feedback: Feedback, max_listed: int) -> str:
    """The user turn's text for this feedback, in the task's answer format."""
    templates = REVISION_PROMPTS[task]
    if feedback.kind in ("discrepancies", "clean"):
        ranked = sorted(feedback.discrepancies, key=lambda e: SEVERITY_FIRST * int(e.get("severity") or 0))
        lines = [DISCREPANCY_LINE.format(category=e.get("category", "?"), severity=e.get("severity", "?"),
                                         location=e.get("location") or "unspecified",
                                         description=e.get("description") or "")
                 for e in ranked[:max_listed]] or [NO_DISCREPANCY_LINE]
        return templates["discrepancies"].format(items="\n".join(lines))
    if feedback.kind == "render_error":
        error, _, detail = feedback.detail.partition(": ")
        return templates["render_error"].format(error=error, detail=detail)
    return templates[feedback.kind]


def root_prompt_id(prompt_id: str) -> str:
    return _ROUND_SUFFIX.sub("", prompt_id)


def revision_turn(previous: Sample, max_listed: int = 8, feedback_mode: FeedbackMode = "critic") -> Sample:
    """The prompt that asks the policy to revise `previous` (an answer, rendered and judged).

    Its GRPO group id is the original prompt's id + "@r<turn>": a prompt's revised answers of one round form
    a group. The rendering is shown (a second image) only when the feedback is about what it draws."""
    task = get_task(previous.task)
    feedback = feedback_for(previous, feedback_mode)
    first_turn = previous.messages if previous.turn == 0 else previous.messages[:-2]
    if previous.code:
        said = f"```{task.code_languages[0]}\n{previous.code}\n```"
    else:
        said = previous.response_text or ""
    text = feedback_text(previous.task, feedback, max_listed)
    shows_rendering = feedback.kind in ("discrepancies", "clean", "unjudged")
    content: list[dict[str, Any]] = [{"type": "image"}] if shows_rendering else []
    content.append({"type": "text", "text": text})
    turn = previous.turn + 1
    return Sample(
        task=previous.task,
        reference_image=previous.reference_image,
        prompt_id=f"{root_prompt_id(previous.prompt_id)}@r{turn}",
        messages=[*first_turn, {"role": "assistant", "content": said}, {"role": "user", "content": content}],
        ground_truth_code=previous.ground_truth_code,
        feedback_images=[previous.rendered_image] if shows_rendering else [],
        turn=turn,
        extra={**{k: previous.extra[k] for k in PROMPT_EXTRA_KEYS if k in previous.extra},
               "revision_of": previous.uid, "feedback": feedback.kind},
    )


@dataclass
class Revision:
    """One item's attempts, [first answer, revision 1, ...], and why its revising stopped."""

    attempts: list[Sample]
    stopped: str | None = None  # "clean" (the critic listed nothing) or "rounds" (all rounds were used)

    def kept(self, keep: Keep, rounds: int | None = None) -> Sample:
        """The answer kept after `rounds` revision rounds (None: all that were made)."""
        pool = self.attempts if rounds is None else self.attempts[: rounds + 1]
        if keep == "last":
            return pool[-1]
        return max(pool, key=_reward_key)  # max keeps the first of equals: ties go to the earlier attempt


def _reward_key(sample: Sample) -> float:
    return sample.reward if sample.reward is not None else float("-inf")


@dataclass
class RoundCost:
    """What one revision round spent (round 0: the first answers, filled in by the caller if known)."""

    revised: int = 0  # items revised in this round
    tokens: int = 0  # generated tokens
    generate_s: float = 0.0
    render_s: float = 0.0
    judge_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.generate_s + self.render_s + self.judge_s


@dataclass
class RevisionRun:
    items: list[Revision]
    costs: list[RoundCost] = field(default_factory=list)  # one per round made, round 1 first

    def kept(self, keep: Keep, rounds: int | None = None) -> list[Sample]:
        return [item.kept(keep, rounds) for item in self.items]


def generated_tokens(samples: list[Sample]) -> int:
    return sum(len(s.response_ids or ()) for s in samples)


def revise(first: list[Sample], generate: Callable[[list[Sample]], list[Sample]],
           render: Callable[[list[Sample]], Any], judge: Callable[[list[Sample]], Any], rounds: int,
           stop_when_clean: bool = True, max_listed: int = 8, feedback_mode: FeedbackMode = "critic",
           on_round: Callable[[int, list[Sample]], None] | None = None) -> RevisionRun:
    """Revise each of `first` (answers already rendered and judged) for up to `rounds` rounds.

    generate(prompts) → one answer per prompt; render(samples) and judge(samples) fill the samples in place.
    `on_round(k, answers)` is called after round k's answers are judged (progress, logging)."""
    run = RevisionRun([Revision([s]) for s in first])
    for k in range(1, rounds + 1):
        todo: list[Revision] = []
        for item in run.items:
            if item.stopped is not None:
                continue
            if stop_when_clean and feedback_for(item.attempts[-1], feedback_mode).kind == "clean":
                item.stopped = "clean"
                continue
            todo.append(item)
        if not todo:
            break
        cost = RoundCost(revised=len(todo))
        t0 = time.perf_counter()
        answers = generate([revision_turn(item.attempts[-1], max_listed, feedback_mode) for item in todo])
        if len(answers) != len(todo):
            raise ValueError(f"revision round {k}: generate returned {len(answers)} answers for {len(todo)} prompts")
        t1 = time.perf_counter()
        render(answers)
        t2 = time.perf_counter()
        judge(answers)
        cost.generate_s, cost.render_s, cost.judge_s = t1 - t0, t2 - t1, time.perf_counter() - t2
        cost.tokens = generated_tokens(answers)
        run.costs.append(cost)
        for item, answer in zip(todo, answers):
            item.attempts.append(answer)
        if on_round is not None:
            on_round(k, answers)
    for item in run.items:
        if item.stopped is None:
            item.stopped = "clean" if stop_when_clean and feedback_for(item.attempts[-1], feedback_mode).kind == "clean" \
                else "rounds"
    return run


def revision_groups(groups: list[list[Sample]]) -> list[list[Sample]]:
    """Training: the revised answers each first answer carries (`extra["revisions"]`), grouped per prompt and
    round — the GRPO groups of the revised turns, in prompt order then round order."""
    out: list[list[Sample]] = []
    for group in groups:
        by_turn: dict[int, list[Sample]] = {}
        for first in group:
            for answer in first.extra.get("revisions", ()):
                by_turn.setdefault(answer.turn, []).append(answer)
        out.extend(by_turn[t] for t in sorted(by_turn))
    return out


__all__ = [
    "Feedback",
    "Revision",
    "RevisionRun",
    "RoundCost",
    "feedback_for",
    "feedback_text",
    "revise",
    "revision_groups",
    "revision_turn",
    "root_prompt_id",
]
