"""Reward model behind one or more OpenAI-compatible chat endpoints (e.g. `vllm serve` of Visual-ERM, which
is how the paper's authors ran it).

Per endpoint at most `max_concurrency` requests are in flight; each request is sent to the endpoint with the
lowest load that is not cooling down after a failure. Timeouts, refused connections, HTTP 429 and 5xx are
retried with exponential backoff (with jitter), preferring another endpoint; other 4xx answers are final. A
pair whose retries are exhausted gets an explicit `transport:` failure; nothing raises, nothing is dropped.
Images travel as PNG data URLs (under the released layout, of the pixels its JPEG encoding gives: see
`images.prepare_pair`); the answer format's JSON Schema as `response_format` (or vLLM's `structured_outputs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.critic.backends.base import RawAnswer, RewardBackend, TextRequest
from pipeline.critic.config import EndpointConfig, RewardConfig
from pipeline.critic.images import png_data_url
from pipeline.critic.prompts import messages

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
REFERENCE_URL_CACHE = 64  # distinct reference images whose data URL is kept (a step has a few dozen groups)


@dataclass
class EndpointState:
    cfg: EndpointConfig
    in_flight: int = 0
    unhealthy_until: float = 0.0
    requests: int = 0
    successes: int = 0
    failures: int = 0
    semaphore: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.cfg.base_url.rstrip("/") + "/chat/completions"

    def load(self) -> float:
        return self.in_flight / self.cfg.max_concurrency


class _Retryable(Exception):
    pass


class OpenAIBackend(RewardBackend):
    name = "openai"

    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        self.ocfg = cfg.openai
        self.endpoints = [EndpointState(e) for e in self.ocfg.endpoints]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="openai-reward-loop", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient | None = None
        self._reference_urls: dict[tuple, str] = {}  # only touched on the event loop's thread
        asyncio.run_coroutine_threadsafe(self._setup(), self.loop).result(timeout=30)

    async def _setup(self) -> None:
        timeout = httpx.Timeout(self.ocfg.timeout_s, connect=self.ocfg.connect_timeout_s)
        total = sum(e.cfg.max_concurrency for e in self.endpoints)
        self._client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=total),
                                         trust_env=False)  # never route RM traffic through a proxy from env
        self._slot = asyncio.Condition()

    # -- request building --------------------------------------------------------------------------------
    def body(self, task: str, ref, pred) -> dict[str, Any]:
        s = self.cfg.sampling(task)
        urls = iter((self._reference_url(ref), png_data_url(pred)))
        chat = []
        for message in messages(task, self.cfg):
            parts = message["content"]
            if all(p["type"] == "text" for p in parts):  # a text-only turn (the released table system line)
                chat.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
                continue
            content = [{"type": "image_url", "image_url": {"url": next(urls)}} if p["type"] == "image" else p
                       for p in parts]
            chat.append({"role": message["role"], "content": content})
        body: dict[str, Any] = {
            "model": self.ocfg.model,
            "messages": chat,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p if s.temperature > 0 else 1.0,
            "presence_penalty": s.presence_penalty,
        }
        if s.top_k and s.temperature > 0:
            body["top_k"] = s.top_k  # vLLM extension
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty  # vLLM extension (official tables: 1.05)
        schema = self.schemas[task]
        mode = self.ocfg.structured_output
        if mode == "response_format":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": f"{task}_judgement", "schema": schema, "strict": True}}
        elif mode == "structured_outputs":
            body["structured_outputs"] = {"json": schema}
        elif mode == "guided_json":
            body["guided_json"] = schema
        return body

    def _reference_url(self, ref) -> str:
        """The reference's PNG data URL, encoded once per distinct image: the n samples of a group share one
        reference, and PNG encoding (~9 ms for 640x480) is most of this client's CPU per pair."""
        key = (ref.size, ref.mode, hashlib.blake2b(ref.tobytes(), digest_size=16).digest())
        url = self._reference_urls.pop(key, None) or png_data_url(ref)
        self._reference_urls[key] = url  # most recent last
        while len(self._reference_urls) > REFERENCE_URL_CACHE:
            self._reference_urls.pop(next(iter(self._reference_urls)))
        return url

    def text_body(self, request: TextRequest) -> dict[str, Any]:
        """A text-only chat (no images), greedy, constrained to the request's schema like the image path."""
        body: dict[str, Any] = {"model": self.ocfg.model, "messages": request.messages,
                                "max_tokens": request.max_new_tokens, "temperature": 0.0, "top_p": 1.0}
        mode = self.ocfg.structured_output
        if mode == "response_format":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "text_answer", "schema": request.schema,
                                                       "strict": True}}
        elif mode == "structured_outputs":
            body["structured_outputs"] = {"json": request.schema}
        elif mode == "guided_json":
            body["guided_json"] = request.schema
        return body

    # -- endpoint choice ---------------------------------------------------------------------------------
    async def _acquire(self, avoid: EndpointState | None) -> EndpointState:
        async with self._slot:
            while True:
                now = time.monotonic()
                free = [e for e in self.endpoints if e.in_flight < e.cfg.max_concurrency]
                healthy = [e for e in free if e.unhealthy_until <= now] or free
                preferred = [e for e in healthy if e is not avoid] or healthy
                if preferred:
                    best = min(preferred, key=lambda e: (e.load(), e.unhealthy_until, e.requests))
                    best.in_flight += 1
                    best.requests += 1
                    return best
                await self._slot.wait()

    async def _release(self, ep: EndpointState) -> None:
        async with self._slot:
            ep.in_flight -= 1
            self._slot.notify_all()

    async def _post(self, ep: EndpointState, body: dict) -> RawAnswer:
        headers = {}
        if ep.cfg.api_key_env and os.environ.get(ep.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[ep.cfg.api_key_env]}"
        try:
            resp = await self._client.post(ep.url, json=body, headers=headers)
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Retryable(f"{type(e).__name__}") from None
        if resp.status_code in RETRYABLE_STATUS:
            raise _Retryable(f"http_{resp.status_code}")
        if resp.status_code != 200:
            return RawAnswer(error=f"transport:http_{resp.status_code}: {resp.text[:200]}", retryable=False)
        try:
            choice = resp.json()["choices"][0]
            return RawAnswer(choice["message"]["content"], choice.get("finish_reason"))
        except (ValueError, KeyError, IndexError, TypeError):
            return RawAnswer(error=f"transport:malformed response: {resp.text[:200]}", retryable=False)

    async def _request(self, body: dict) -> RawAnswer:
        o = self.ocfg
        last, avoid = "no attempt", None
        for attempt in range(o.max_retries + 1):
            if attempt:
                delay = min(o.backoff_max_s, o.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                await asyncio.sleep(delay)
            ep = await self._acquire(avoid)
            try:
                answer = await self._post(ep, body)
                ep.successes += 1
                ep.unhealthy_until = 0.0
                return answer
            except _Retryable as e:
                ep.failures += 1
                ep.unhealthy_until = time.monotonic() + o.unhealthy_cooldown_s
                last, avoid = f"{e} from {ep.cfg.base_url}", ep
                log.warning("reward endpoint %s: %s (attempt %d/%d)", ep.cfg.base_url, e, attempt + 1,
                            o.max_retries + 1)
            finally:
                await self._release(ep)
        # Transport retries are exhausted: asking again at the judgement level would only multiply them.
        return RawAnswer(error=f"transport:{last} after {o.max_retries + 1} tries", retryable=False)

    async def _agenerate(self, task, pairs) -> list[RawAnswer]:
        return list(await asyncio.gather(*(self._request(self.body(task, r, p)) for r, p in pairs)))

    def _worst_case_s(self, n: int) -> float:
        o = self.ocfg
        waves = -(-n // max(1, sum(e.cfg.max_concurrency for e in self.endpoints)))
        per_wave = (o.max_retries + 1) * (o.timeout_s + o.connect_timeout_s + o.backoff_max_s)
        return per_wave * max(1, waves) + 30

    def _generate(self, task, pairs, attempt):
        fut = asyncio.run_coroutine_threadsafe(self._agenerate(task, pairs), self.loop)
        return fut.result(timeout=self._worst_case_s(len(pairs)))

    async def _agenerate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        return list(await asyncio.gather(*(self._request(self.text_body(r)) for r in requests)))

    def _generate_text(self, requests):
        fut = asyncio.run_coroutine_threadsafe(self._agenerate_text(requests), self.loop)
        return fut.result(timeout=self._worst_case_s(len(requests)))

    def endpoint_stats(self) -> list[dict[str, Any]]:
        return [{"base_url": e.cfg.base_url, "requests": e.requests, "successes": e.successes,
                 "failures": e.failures, "in_flight": e.in_flight} for e in self.endpoints]

    def close(self) -> None:
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self.loop).result(timeout=10)
            self._client = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
