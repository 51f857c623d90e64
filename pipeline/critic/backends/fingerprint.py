"""A deterministic stand-in for the reward model: its answer is a pure function of the two images.

Used to test plumbing (batching, replicas, retries, identity under concurrency) where a mix-up must be
detectable: the expected judgement of every pair can be recomputed from the pair alone (`expected_answer`).
It goes through the same answer checking as a real model. Select with `reward.backend=fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
from PIL import Image

from pipeline.critic.backends.base import RawAnswer, RewardBackend
from pipeline.critic.config import OURS_FORMAT, AnswerFormat, RewardConfig
from pipeline.critic.images import resize_max_side, to_array
from pipeline.critic.schema import answer_document
from pipeline.sample import CATEGORIES


def fingerprint(reference: Image.Image, rendered: Image.Image) -> str:
    h = hashlib.sha1()
    for im in (reference, rendered):
        arr = np.asarray(im)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _errors_for(task: str, reference: Image.Image, rendered: Image.Image) -> list[dict]:
    fp = fingerprint(reference, rendered)
    n = int(fp[:2], 16) % 4
    cats = CATEGORIES[task]
    return [{"category": cats[(int(fp[2 + k], 16)) % len(cats)], "severity": 1 + int(fp[6 + k], 16) % 3,
             "location": f"region {k}", "description": f"fp {fp}"} for k in range(n)]


def answer_for(task: str, reference: Image.Image, rendered: Image.Image, fmt: AnswerFormat | None = None) -> str:
    """The answer text, in answer format `fmt` (None = ours)."""
    return json.dumps(answer_document(task, _errors_for(task, reference, rendered), fmt or OURS_FORMAT),
                      separators=(",", ":"))


def expected_answer(task: str, reference, rendered, max_side: int) -> dict:
    """What the fingerprint backend judges for this pair under our layout (after the same resizing), in the
    format-independent form: {"errors": [{category, severity, location, description}], "counts": {...}}."""
    ref = resize_max_side(to_array(reference), max_side)
    pred = resize_max_side(to_array(rendered), max_side)
    return json.loads(answer_for(task, ref, pred))


class FingerprintBackend(RewardBackend):
    name = "fingerprint"

    def __init__(self, cfg: RewardConfig, delay_s_per_call: float = 0.0, delay_s_per_pair: float = 0.0,
                 engine_error_rate: float = 0.0):
        super().__init__(cfg)
        self.delay_s_per_call = delay_s_per_call
        self.delay_s_per_pair = delay_s_per_pair
        self.engine_error_rate = engine_error_rate
        self.calls = 0
        self.batch_sizes: list[int] = []

    def _generate(self, task, pairs, attempt):
        self.calls += 1
        self.batch_sizes.append(len(pairs))
        if self.delay_s_per_call or self.delay_s_per_pair:
            time.sleep(self.delay_s_per_call + self.delay_s_per_pair * len(pairs))
        return [RawAnswer(error="backend:RuntimeError: injected engine error") if self._engine_fails(ref, pred)
                else RawAnswer(answer_for(task, ref, pred, self.formats[task]), "stop") for ref, pred in pairs]

    def _engine_fails(self, reference: Image.Image, rendered: Image.Image) -> bool:
        return int(fingerprint(reference, rendered)[8:12], 16) / 0x10000 < self.engine_error_rate
