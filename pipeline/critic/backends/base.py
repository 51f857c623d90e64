"""One interface for every reward-model backend: `score(requests) -> judgements`, same order, same length.

A backend only has to turn (task, reference, rendering) pairs into raw text answers (`_generate`); checking
the answers, retrying invalid ones and turning bad input into explicit failed judgements is shared here, so
every backend counts failures the same way and never raises on a bad pair.

Backends that serve a language model also answer text-only chats constrained to a small JSON Schema
(`generate_text`): the critic evaluation's LLM-judge matcher asks its yes / partial / no questions that way.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any

from PIL import Image

from pipeline.critic.config import RewardConfig
from pipeline.critic.images import BadImage, prepare_pair
from pipeline.critic.judgement import Judgement, parse_judgement
from pipeline.critic.schema import json_schema, worst_case_tokens
from pipeline.sample import CATEGORIES

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (e.g. vLLM not installed, no GPU); the message says what is missing."""


@dataclass
class JudgeRequest:
    task: str
    reference: Any  # HxWx3 uint8 array (or PIL image / encoded bytes)
    rendered: Any
    key: str = ""  # the caller's identity for this pair (a Sample uid); carried through untouched
    # The programs behind the pair, for critics that read code (the structural oracle); model critics ignore them.
    reference_code: str | None = None
    code: str | None = None


@dataclass
class RawAnswer:
    text: str | None = None
    finish_reason: str | None = None  # "stop" | "length" | None
    error: str | None = None  # the backend could not produce an answer (transport failure...)
    retryable: bool = True  # whether asking again may help (False: already retried at transport level)


@dataclass
class TextRequest:
    """A text-only chat whose answer must follow `schema` (a JSON Schema), answered greedily."""

    messages: list[dict[str, Any]]  # [{"role": "user", "content": "..."}]; content is plain text
    schema: dict[str, Any]
    max_new_tokens: int = 64


@dataclass
class BackendStats:
    pairs: int = 0
    generated: int = 0  # model answers produced (including retries)
    invalid_answers: int = 0  # answers that failed the schema (before retries)
    invalid_judgements: int = 0  # pairs still invalid after all attempts
    lenient_answers: int = 0  # answers the schema rejected that the official rule read leniently (valid)
    bad_inputs: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    invalid_examples: list[dict] = field(default_factory=list)  # the first few invalid answers, for logs
    text_requests: int = 0  # text-only chats asked (generate_text)
    text_errors: int = 0  # of those, how many got no answer at all (backend or transport failure)

    def count(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def add(self, other: BackendStats) -> None:
        """Fold one call's counts into these (a replica may run several calls at once)."""
        for f in fields(self):
            if isinstance(getattr(self, f.name), int):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for key, n in other.reasons.items():
            self.reasons[key] = self.reasons.get(key, 0) + n
        self.invalid_examples.extend(other.invalid_examples[: max(0, 5 - len(self.invalid_examples))])


class RewardBackend(ABC):
    name = "base"

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.stats = BackendStats()
        self._stats_lock = threading.Lock()  # batches overlap on engines with continuous batching
        # The answer format of each task decides the decoder's constraint and the parser's rules alike.
        self.formats = {task: cfg.answer_format(task) for task in CATEGORIES}
        self.schemas = {task: json_schema(task, cfg.limits, self.formats[task]) for task in CATEGORIES}
        for task in CATEGORIES:
            need, have = worst_case_tokens(task, cfg.limits, self.formats[task]), cfg.sampling(task).max_new_tokens
            if have < need:
                log.info(
                    "reward %s: max_new_tokens=%d is below the longest schema-valid answer (%d tokens): a long "
                    "answer can be cut off and count as invalid. Raise max_new_tokens or lower reward.limits.",
                    task, have, need)

    # -- what a backend implements ---------------------------------------------------------------------
    @abstractmethod
    def _generate(self, task: str, pairs: list[tuple[Image.Image, Image.Image]], attempt: int) -> list[RawAnswer]:
        """One answer per (reference, rendering) pair, in order."""

    def _generate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        """One schema-constrained answer per text-only chat, in order (backends with a language model)."""
        raise BackendUnavailable(f"the {self.name} reward backend has no text generation")

    @property
    def supports_text(self) -> bool:
        return type(self)._generate_text is not RewardBackend._generate_text

    def close(self) -> None:
        pass

    def generate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        """Answer text-only chats under their JSON Schemas; the i-th answer belongs to the i-th request.

        Never raises for a failed call: every request of it gets a RawAnswer with `error` set. Whether an
        answer is acceptable is the caller's decision (it knows the schema's meaning), and so are retries.
        """
        if not requests:
            return []
        with self._stats_lock:
            self.stats.text_requests += len(requests)
        try:
            answers = self._generate_text(requests)
            if len(answers) != len(requests):
                raise RuntimeError(f"backend returned {len(answers)} answers for {len(requests)} chats")
        except BackendUnavailable:
            raise
        except Exception as e:  # the whole call failed: every chat in it gets the reason
            log.exception("reward backend %s failed on %d text chats", self.name, len(requests))
            answers = [RawAnswer(error=f"backend:{type(e).__name__}: {e}"[:300])] * len(requests)
        with self._stats_lock:
            self.stats.text_errors += sum(a.error is not None for a in answers)
        return answers

    # -- shared ------------------------------------------------------------------------------------------
    def prepare(self, request: JudgeRequest) -> tuple[Image.Image, Image.Image]:
        """The pair as the critic sees it under the task's layout (images.prepare_pair)."""
        return prepare_pair(request.task, request.reference, request.rendered,
                            self.cfg.task_settings(request.task).layout, self.cfg.max_image_side)

    def score(self, requests: list[JudgeRequest]) -> list[Judgement]:
        """Judge every pair; the i-th judgement belongs to the i-th request. Never raises for a bad pair.
        Safe to call from several threads at once (each call counts into its own stats, folded in at the end)."""
        stats = BackendStats()
        try:
            return self._score(requests, stats)
        finally:
            with self._stats_lock:
                self.stats.add(stats)

    def _score(self, requests: list[JudgeRequest], stats: BackendStats) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(requests)
        prepared: dict[int, tuple[Image.Image, Image.Image]] = {}
        for i, req in enumerate(requests):
            stats.pairs += 1
            if req.task not in CATEGORIES:
                results[i] = Judgement.failed(str(req.task), f"bad_input:unknown task {req.task!r}")
                stats.bad_inputs += 1
                continue
            try:
                prepared[i] = self.prepare(req)
            except BadImage as e:
                results[i] = Judgement.failed(req.task, f"bad_input:{e}")
                stats.bad_inputs += 1
        for task in CATEGORIES:
            pending = [i for i in prepared if requests[i].task == task]
            attempt = 0
            while pending:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    answers = self._generate(task, [prepared[i] for i in pending], attempt)
                    if len(answers) != len(pending):
                        raise RuntimeError(f"backend returned {len(answers)} answers for {len(pending)} pairs")
                except BackendUnavailable:
                    raise
                except Exception as e:  # the whole call failed: every pair in it gets the reason
                    log.exception("reward backend %s failed on %d pairs", self.name, len(pending))
                    answers = [RawAnswer(error=f"backend:{type(e).__name__}: {e}"[:300])] * len(pending)
                dt = (time.perf_counter() - t0) / max(1, len(pending))
                retry = []
                for i, ans in zip(pending, answers):
                    if ans.error is not None:
                        j = Judgement.failed(task, ans.error if ":" in ans.error else f"transport:{ans.error}")
                    else:
                        stats.generated += 1
                        j = parse_judgement(ans.text, task, self.cfg.limits, ans.finish_reason, self.formats[task],
                                            rule=self.cfg.task_settings(task).parsing)
                        stats.lenient_answers += j.lenient
                        if not j.valid:
                            stats.invalid_answers += 1
                            if len(stats.invalid_examples) < 5:
                                stats.invalid_examples.append(
                                    {"task": task, "reason": j.reason, "finish_reason": ans.finish_reason,
                                     "raw": (ans.text or "")[:2000]})
                    j.attempts, j.latency_s = attempt, (results[i].latency_s if results[i] else 0.0) + dt
                    results[i] = j
                    if not j.valid and ans.retryable and attempt < self.cfg.attempts(task):
                        retry.append(i)
                pending = retry
        out = []
        for j in results:
            assert j is not None
            if not j.valid:
                stats.invalid_judgements += 1
                stats.count(j.reason or "unknown")
            out.append(j)
        return out
