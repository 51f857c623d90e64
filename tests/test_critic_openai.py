"""OpenAI-compatible backend against real HTTP servers this test starts on 127.0.0.1 (never another address):
request format, per-endpoint concurrency limits, retries with backoff on 5xx and timeouts, balancing across
endpoints, and explicit failures when every endpoint is down. Each server stops itself (request cap, timer)."""

import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.critic.backends import JudgeRequest
from pipeline.critic.backends.openai import OpenAIBackend
from pipeline.critic.config import RewardConfig
from pipeline.critic.schema import json_schema
from pipeline.critic.scorer import RewardScorer
from pipeline.critic.testing import ChatServer, random_samples
from pipeline.sample import CATEGORIES

MAX_REQUESTS = 400  # a server answers 503 after this many, whatever the test does
LIFETIME_S = 90  # and shuts itself down after this long


class FakeRM(ChatServer):
    """A canned OpenAI-compatible chat endpoint. `fail_first` requests get HTTP 503, `slow_s` delays every
    answer, `garbage_first` answers are not JSON."""

    def __init__(self, fail_first=0, slow_s=0.0, garbage_first=0, work_s=0.02):
        self.fail_first, self.slow_s, self.garbage_first, self.work_s = fail_first, slow_s, garbage_first, work_s
        self.requests, self.bodies, self.in_flight, self.max_in_flight = 0, [], 0, 0
        self.lock = threading.Lock()
        super().__init__(self._answer, lifetime_s=LIFETIME_S)

    def _answer(self, raw: bytes) -> tuple[int, str]:
        body = json.loads(raw)
        with self.lock:
            self.requests += 1
            n = self.requests
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.work_s + self.slow_s)
            if n > MAX_REQUESTS or n <= self.fail_first:
                return 503, "overloaded"
            if n <= self.fail_first + self.garbage_first:
                return 200, "Sorry, I cannot compare these."
            task = body["response_format"]["json_schema"]["name"].split("_")[0]
            cats = CATEGORIES[task]
            errors = [{"category": cats[n % len(cats)], "severity": 1 + n % 3, "location": "title",
                       "description": f"request {n}"}]
            return 200, json.dumps({"errors": errors, "counts": {c: int(c == cats[n % len(cats)]) for c in cats}})
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def servers():
    started = []

    def start(**kw):
        s = FakeRM(**kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now: connections are refused
    return f"http://127.0.0.1:{port}/v1"


def _cfg(endpoints, **openai):
    return RewardConfig.model_validate({
        "backend": "openai",
        "openai": {"endpoints": endpoints, "model": "visual-erm-8b", "timeout_s": 5, "backoff_s": 0.01,
                   "backoff_max_s": 0.05, "unhealthy_cooldown_s": 1.0, **openai}})


def _png_size(url):
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def _requests(n, seed=0):
    return [JudgeRequest(s.task, s.reference_image, s.rendered_image, key=s.uid) for s in random_samples(n, seed)]


def test_request_format_and_judgements(servers):
    rm = servers()
    backend = OpenAIBackend(_cfg([{"base_url": rm.url, "max_concurrency": 4}]))
    try:
        wide = JudgeRequest("chart", np.full((300, 1400, 3), 200, np.uint8), np.zeros((50, 60, 3), np.uint8))
        out = backend.score([wide] + _requests(6))
    finally:
        backend.close()
    assert [j.valid for j in out] == [True] * 7 and rm.requests == 7
    bodies = {b["response_format"]["json_schema"]["name"]: b for b in rm.bodies}
    chart, table = bodies["chart_judgement"], bodies["table_judgement"]
    assert chart["model"] == "visual-erm-8b"
    assert (chart["temperature"], chart["top_p"], chart["top_k"], chart["presence_penalty"],
            chart["max_tokens"]) == (0.7, 0.8, 20, 1.5, 4096)
    assert table["temperature"] == 0.0 and "top_k" not in table
    assert chart["response_format"]["json_schema"]["schema"] == json_schema("chart", RewardConfig().limits)
    for body in rm.bodies:
        content = body["messages"][0]["content"]
        assert [p["type"] for p in content] == ["text", "image_url", "text", "image_url", "text"]
        urls = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
        assert all(u.startswith("data:image/png;base64,") for u in urls)
    wide_body = next(b for b in rm.bodies if b["response_format"]["json_schema"]["name"] == "chart_judgement"
                     and _png_size(b["messages"][0]["content"][1]["image_url"]["url"])[0] > 100)
    urls = [p["image_url"]["url"] for p in wide_body["messages"][0]["content"] if p["type"] == "image_url"]
    sizes = [_png_size(u) for u in urls]
    assert sizes == [(1024, 219), (60, 50)]  # the reference is resized to ≤1024 px; aspect kept


def _pixels(url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_a_shared_reference_is_encoded_once_and_each_body_carries_its_own_images(servers, monkeypatch):
    import pipeline.critic.backends.openai as openai_backend

    encoded = []
    real = openai_backend.png_data_url
    monkeypatch.setattr(openai_backend, "png_data_url", lambda im: encoded.append(im.size) or real(im))
    rm = servers()
    backend = OpenAIBackend(_cfg([{"base_url": rm.url, "max_concurrency": 2}]))
    rng = np.random.default_rng(0)
    refs = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    preds = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(6)]
    try:  # a group of 4 samples on refs[0], then 2 on refs[1] (a copy: equal pixels, another array)
        pairs = [(refs[0], p) for p in preds[:4]] + [(refs[1].copy(), p) for p in preds[4:]]
        out = backend.score([JudgeRequest("chart", r, p) for r, p in pairs])
    finally:
        backend.close()
    assert all(j.valid for j in out) and rm.requests == 6
    assert len(encoded) == 6 + 2  # every rendering, each distinct reference once
    seen = set()
    for body in rm.bodies:
        ref_url, pred_url = (p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url")
        ref, pred = _pixels(ref_url), _pixels(pred_url)
        i = next(k for k, p in enumerate(preds) if np.array_equal(p, pred))
        assert np.array_equal(ref, refs[0] if i < 4 else refs[1])  # the cache never hands out another reference
        seen.add(i)
    assert seen == set(range(6))


def test_retries_with_backoff_and_balancing_across_endpoints(servers):
    flaky, healthy = servers(fail_first=3), servers()
    backend = OpenAIBackend(_cfg([{"base_url": flaky.url, "max_concurrency": 2},
                                  {"base_url": healthy.url, "max_concurrency": 2}]))
    try:
        out = backend.score(_requests(24, seed=1))
        stats = {s["base_url"]: s for s in backend.endpoint_stats()}
    finally:
        backend.close()
    assert all(j.valid for j in out) and all(j.attempts == 1 for j in out)
    assert stats[flaky.url]["failures"] == 3 and stats[healthy.url]["failures"] == 0
    assert stats[flaky.url]["successes"] + stats[healthy.url]["successes"] == 24
    assert stats[flaky.url]["successes"] >= 1 and stats[healthy.url]["successes"] >= 12  # both used
    assert flaky.max_in_flight <= 2 and healthy.max_in_flight <= 2  # the per-endpoint concurrency limit
    assert max(flaky.max_in_flight, healthy.max_in_flight) == 2  # ...and it is used


def test_timeouts_fail_over_to_another_endpoint(servers):
    slow, fast = servers(slow_s=3.0), servers()
    backend = OpenAIBackend(_cfg([{"base_url": slow.url, "max_concurrency": 2},
                                  {"base_url": fast.url, "max_concurrency": 2}], timeout_s=0.4))
    t0 = time.monotonic()
    try:
        out = backend.score(_requests(6, seed=2))
        stats = {s["base_url"]: s for s in backend.endpoint_stats()}
    finally:
        backend.close()
    assert all(j.valid for j in out)
    assert stats[slow.url]["failures"] >= 1 and stats[slow.url]["successes"] == 0
    assert stats[fast.url]["successes"] == 6
    assert time.monotonic() - t0 < 10


def test_garbage_answers_are_asked_again(servers):
    rm = servers(garbage_first=2)
    cfg = _cfg([{"base_url": rm.url, "max_concurrency": 1}]).model_copy(update={"max_attempts": 3})
    backend = OpenAIBackend(cfg)
    try:
        out = backend.score(_requests(3, seed=3))
    finally:
        backend.close()
    assert all(j.valid for j in out)
    # chart, table, svg are asked in that order: the chart answer is garbage twice, then valid.
    assert [j.attempts for j in out] == [3, 1, 1]
    assert backend.stats.invalid_answers == 2 and backend.stats.invalid_judgements == 0


def test_every_endpoint_down_is_an_explicit_counted_exclusion():
    cfg = _cfg([{"base_url": _closed_port_url()}, {"base_url": _closed_port_url()}], max_retries=2)
    scorer = RewardScorer(cfg)
    samples = random_samples(4, seed=4)
    t0 = time.monotonic()
    try:
        stats = scorer.score(samples)
    finally:
        scorer.close()
    assert time.monotonic() - t0 < 20
    # the critic never answered: an infrastructure failure, excluded from the update, not an invalid answer
    assert stats["excluded"] == 4 and stats["invalid_judgements"] == 0
    for s in samples:
        j = s.extra["judgement"]
        assert not j["valid"] and j["reason"].startswith("transport:ConnectError") and j["attempts"] == 1
        assert "after 3 tries" in j["reason"]
        assert s.reward is None and s.excluded.startswith("critic:transport:ConnectError")
    assert scorer.backend.stats.reasons == {"transport": 4}


def test_released_layout_request_body():
    """The released layout (official reward code): charts images first then the text, no captions; tables a
    system line, the images, then "<image>\\n<image>\\n" + text; repetition penalty 1.05 for tables; the
    constraint is the released answer format's schema."""
    from pipeline.critic.config import builtin_format

    tasks = {t: {"answer_format": "released", "layout": "released"} for t in ("chart", "table", "svg")}
    cfg = RewardConfig.model_validate({"backend": "openai", "openai": {"endpoints": [{"base_url": "http://x:1/v1"}]},
                                       "tasks": tasks})
    backend = OpenAIBackend(cfg)
    try:
        from pipeline.critic.backends.base import JudgeRequest

        ref, pred = backend.prepare(JudgeRequest("chart", np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)))
        chart = backend.body("chart", ref, pred)
        table = backend.body("table", ref, pred)
    finally:
        backend.close()
    assert [m["role"] for m in chart["messages"]] == ["user"]
    assert [p["type"] for p in chart["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert "Reference image:" not in json.dumps(chart)
    assert table["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert table["messages"][1]["content"][2]["text"].startswith("<image>\n<image>\n")
    assert table["repetition_penalty"] == 1.05 and "repetition_penalty" not in chart
    assert chart["response_format"]["json_schema"]["schema"] == json_schema("chart", cfg.limits,
                                                                            builtin_format("released", "chart"))
