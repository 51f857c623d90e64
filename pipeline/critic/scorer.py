"""The reward service's logic without Ray: failure rules → critic judgements → reward terms → rewards.

`RewardScorer.measure(samples)` is the per-sample phase (what a reward actor runs on its micro-batches);
`RewardScorer.score(samples)` also finalises (batch-normalised formulas over the samples given together) and
fills every sample's reward, breakdown and discrepancies.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipeline.critic.backends import JudgeRequest, RewardBackend, make_backend
from pipeline.critic.config import RewardConfig
from pipeline.critic.judgement import Judgement
from pipeline.models.config import ModelsConfig
from pipeline.rewards.compose import Partial, RewardFunction, precheck
from pipeline.sample import TASK_KINDS, Sample

log = logging.getLogger(__name__)


class RewardScorer:
    def __init__(self, cfg: RewardConfig, models: ModelsConfig | None = None,
                 backend: RewardBackend | None = None):
        self.cfg = cfg
        self.models = models or ModelsConfig()
        self.function = RewardFunction(cfg)
        self._backend = backend
        self.measured = 0
        self.busy_s = 0.0
        self._count_lock = threading.Lock()  # measure runs in several threads when batches overlap

    @property
    def backend(self) -> RewardBackend:
        if self._backend is None:  # built on first use: formulas without a critic never load a model
            self._backend = make_backend(self.cfg, self.models.reward)
        return self._backend

    def warmup(self) -> None:
        if any(self.function.needs_judgement(t) for t in TASK_KINDS):
            _ = self.backend

    def measure(self, samples: list[Sample]) -> list[Partial]:
        t0 = time.perf_counter()
        f = self.cfg.formula
        failures = [precheck(s, f.blank_tolerance, f.blank_rule) for s in samples]
        ok = [i for i, f in enumerate(failures) if f is None]
        judge_rows = [i for i in ok if self.function.needs_judgement(samples[i].task)]
        judgements: dict[int, Judgement] = {}
        if judge_rows:
            requests = [JudgeRequest(samples[i].task, samples[i].reference_image, samples[i].rendered_image,
                                     key=samples[i].uid, reference_code=samples[i].ground_truth_code,
                                     code=samples[i].code) for i in judge_rows]
            for i, j in zip(judge_rows, self.backend.score(requests)):
                judgements[i] = j
        measured = self.function.measure([samples[i] for i in ok], [judgements.get(i) for i in ok])
        partials = [Partial(uid=s.uid, failure=f) for s, f in zip(samples, failures)]
        for i, p in zip(ok, measured):
            partials[i] = p
        with self._count_lock:
            self.measured += len(samples)
            self.busy_s += time.perf_counter() - t0
        return partials

    def score(self, samples: list[Sample]) -> dict[str, Any]:
        return self.function.finalize(samples, self.measure(samples))

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"measured": self.measured, "busy_s": self.busy_s}
        if self._backend is not None:
            out["backend"] = vars(self._backend.stats).copy()
        return out

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


# Reward backends that load `models.reward` from a local directory (the others call an endpoint or need none).
LOCAL_MODEL_BACKENDS = ("hf", "vllm")
