"""Helpers for tests and benchmarks of the reward service: a small-answer config for the tiny reward model,
random (reference, rendering) samples, and a local OpenAI-compatible chat endpoint with scripted answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import numpy as np

from pipeline.critic.config import RewardConfig
from pipeline.critic.schema import worst_case_tokens
from pipeline.sample import TASK_KINDS, Sample

TINY_LIMITS = {"max_errors": 2, "max_location_chars": 16, "max_description_chars": 32}


def tiny_reward_config(**overrides: Any) -> RewardConfig:
    """Paper sampling per task, answers bounded so that a random model's JSON always fits its token budget
    (`max_new_tokens` = the schema's worst case), one torch thread (a tiny model gains nothing from more, and
    loses a lot when cores are shared). Dict overrides are merged into the section."""
    data: dict[str, Any] = {"limits": dict(TINY_LIMITS), "hf": {"max_batch_size": 16, "num_threads": 1}}
    base = RewardConfig.model_validate(data)
    budget = max(worst_case_tokens(t, base.limits) for t in TASK_KINDS)
    data["tasks"] = {
        t: {"sampling": {**base.sampling(t).model_dump(), "max_new_tokens": budget}} for t in TASK_KINDS
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return RewardConfig.model_validate(data)


def random_samples(n: int, seed: int = 0, size: tuple[int, int] = (48, 64)) -> list[Sample]:
    """n rendered samples over the three tasks with random (but structured, non-blank) images."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = size
        ref = np.full((h, w, 3), 255, np.uint8)
        pred = ref.copy()
        for img in (ref, pred):  # a few coloured rectangles: chart-like, never blank
            for _ in range(3):
                y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                img[y : y + rng.integers(4, 9), x : x + rng.integers(4, 9)] = rng.integers(0, 255, 3)
        samples.append(Sample(task=TASK_KINDS[i % 3], reference_image=ref, prompt_id=f"p{i // 4}",
                              code=f"# program {i}", rendered_image=pred))
    return samples


class ChatServer:
    """An OpenAI-compatible `/chat/completions` endpoint on 127.0.0.1 for tests and benchmarks.

    `answer(raw_request_body)` returns (HTTP status, text): the assistant's message for 200, the error message
    otherwise; the server wraps it in the API's JSON. Requests are served on threads, so `answer` must be
    thread-safe. With `lifetime_s` the server shuts itself down after that long, whatever its user does."""

    def __init__(self, answer: Callable[[bytes], tuple[int, str]], lifetime_s: Optional[float] = None):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                status, text = answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                reply = ({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
                         if status == 200 else {"error": text})
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, name="chat-server", daemon=True).start()
        self.watchdog = None
        if lifetime_s is not None:
            self.watchdog = threading.Timer(lifetime_s, self.server.shutdown)
            self.watchdog.daemon = True
            self.watchdog.start()

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
