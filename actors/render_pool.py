"""Ray render pool: actors that each hold one zygote per CPU (chart, svg) plus Chromium (tables).

    pool = RenderPool(config.render, num_actors=2, cpus_per_actor=1)
    results = pool.map([RenderRequest("chart", code), ...])      # ordered, one RenderResult each
    result = await pool.render_async(RenderRequest("svg", svg))   # from an asyncio driver

Guarantees: every request gets exactly one RenderResult, in request order. Bad code becomes a typed failure
inside the sandbox (never resent: it would fail the same way); a crashed zygote/browser is restarted by its
renderer (the sample gets CRASHED). A dead or hung *actor* is an infrastructure failure, not the code's: the
actor is replaced (exactly once, by identity, however many requests or threads notice it) and its outstanding
requests are resent to the pool, at most `max_resends` times each; only then do they get CRASHED with a detail
that says so. `replacements` and `resent` count both. `map` and `render_async` are safe to call from several
threads at once. Backpressure: each actor renders at most `max_inflight_per_actor` requests at a time and one
`map` call never has more than that many outstanding per actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.pool import ActorSlots
from pipeline.placement import NODE_GROUP_LABEL
from pipeline.render import RENDER_KINDS, make_renderer
from pipeline.render.config import RenderConfig
from pipeline.render.result import RenderFailure, RenderRequest, RenderResult

log = logging.getLogger(__name__)
# Extra seconds on top of a request's own time limit (queueing inside the actor, Ray transport).
CALL_SLACK_S = 30.0
# Times a request whose actor died or hung is sent again (to the replacement or another actor) before it comes
# back CRASHED; the default of RenderPool(max_resends=...). Bounded, so a request that somehow kills every actor
# it lands on cannot loop forever.
MAX_RESENDS = 2


@ray.remote
class RenderWorker:
    """Renders for one Ray actor. Blocking renderer calls run on threads; the async API bounds them."""

    def __init__(self, config: RenderConfig, num_cpus: float = 1):
        self.config = config
        zygotes = max(1, int(num_cpus))  # one per whole CPU; a fractional share still gets one
        per_kind = {"chart": zygotes * config.chart.workers, "svg": zygotes * config.svg.workers,
                    "table": config.table.workers}
        specs = [kind for kind in RENDER_KINDS for _ in range(per_kind[kind])]
        # Start all zygotes/browsers in parallel; a missing sandbox layer raises here, clearly, at start-up.
        with ThreadPoolExecutor(max_workers=len(specs)) as starter:
            renderers = list(starter.map(lambda kind: make_renderer(kind, config), specs))
        self._idle: dict[str, asyncio.Queue] = {}
        self._renderers = renderers
        for kind, renderer in zip(specs, renderers):
            self._idle.setdefault(kind, asyncio.Queue()).put_nowait(renderer)
        self._executor = ThreadPoolExecutor(max_workers=len(renderers), thread_name_prefix="render")
        self._inflight = asyncio.Semaphore(config.max_inflight_per_actor)
        self.layers = {kind: dict(r.layers) for kind, r in zip(specs, renderers)}

    def ready(self) -> dict[str, dict[str, str]]:
        """Sandbox layers active per kind (also proves the actor started)."""
        return self.layers

    async def render(self, request: RenderRequest) -> RenderResult:
        async with self._inflight:
            queue = self._idle.get(request.kind)
            if queue is None:
                return RenderResult.fail(RenderFailure.INVALID_INPUT, f"unknown kind {request.kind!r}")
            renderer = await queue.get()
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._executor, renderer.render, request.code, request.size, request.timeout_s,
                    bool(request.trace))
            except Exception as e:
                log.exception("renderer raised")
                return RenderResult.fail(RenderFailure.CRASHED, f"renderer raised {type(e).__name__}: {e}")
            finally:
                queue.put_nowait(renderer)

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()


def _node_group_selector(config) -> dict[str, str]:
    """Ray label selector of the render pool's KubeRay worker group (render.node_group), {} = any node."""
    group = getattr(config, "node_group", None)  # RenderPoolConfig has it; a bare RenderConfig does not
    return {NODE_GROUP_LABEL: group} if group else {}


class RenderPool:
    """Driver-side handle over `num_actors` RenderWorker actors with bounded in-flight requests.

    Thread-safe: `self._lock` (the slots' lock) guards the actor slots and the counters; the rest of a `map`
    call's state is its own. An actor is replaced only by the caller that still finds the failed handle in a
    slot, so a late failure report about an actor that was already replaced never kills the replacement.
    """

    def __init__(self, config: RenderConfig | None = None, num_actors: int = 1, cpus_per_actor: int = 1,
                 start_timeout_s: float = 180.0, max_resends: int = MAX_RESENDS):
        self.config = config or RenderConfig()
        self.cpus_per_actor = cpus_per_actor
        self.max_resends = max(0, int(max_resends))
        self.resent = 0  # requests sent again after their actor died or hung
        self._next = 0
        self._async_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._actors = ActorSlots("render actor", lambda _serial: self._new_actor(), num_actors, start_timeout_s)
        self._lock = self._actors.lock
        self.layers = self._actors.ready_answers[0]

    @property
    def actors(self) -> list:
        return self._actors.handles

    @property
    def replacements(self) -> int:
        """Actors replaced because they died or hung."""
        return self._actors.replacements

    def _new_actor(self):
        return RenderWorker.options(
            num_cpus=self.cpus_per_actor, max_concurrency=4 * self.config.max_inflight_per_actor,
            max_restarts=0, label_selector=_node_group_selector(self.config)).remote(self.config, self.cpus_per_actor)

    def _timeout_for(self, request: RenderRequest) -> float:
        limit = request.timeout_s or getattr(self.config, request.kind, self.config.chart).timeout_s
        return limit + CALL_SLACK_S

    def _deadline_s(self, request: RenderRequest) -> float:
        """How long a request may take before its actor counts as hung: its own limit plus slack, times the
        requests it may queue behind on the actor's renderers (at most `window` per actor, one zygote per CPU)."""
        window = self.config.max_inflight_per_actor
        return self._timeout_for(request) * (1 + window // max(1, self.cpus_per_actor))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"replacements": self.replacements, "resent": self.resent}

    # ------------------------------------------------------------------------------------------ actors
    def _actor_at(self, slot: int):
        with self._lock:
            return self.actors[slot]

    def _swap_actor(self, failed, reason: str):
        """A successor in `failed`'s slot, unless someone replaced it already (None); it may still be starting.
        No budget: a request is resent at most `max_resends` times, whatever the actors do."""
        successor = self._actors.replace(failed)
        if successor is None:
            return None
        log.warning("render actor %d %s; replaced it (%d replacement(s) so far)", successor.index, reason,
                    self.replacements)
        return successor.handle

    # One that does not start is only logged: requests sent to it fail, are resent, and finally come back CRASHED.
    def _replace_actor(self, failed, reason: str) -> None:
        new = self._swap_actor(failed, reason)
        if new is not None:
            self._actors.started(new)

    async def _replace_actor_async(self, failed, reason: str) -> None:
        new = self._swap_actor(failed, reason)
        if new is not None:
            await self._actors.started_async(new)

    def _resend_or_crash(self, attempts: int, why: str) -> RenderResult | None:
        """After an infrastructure failure on attempt `attempts`: None = send it again, else the final result."""
        if attempts <= self.max_resends:
            with self._lock:
                self.resent += 1
            return None
        return RenderResult.fail(
            RenderFailure.CRASHED,
            f"{why} after {attempts} attempt{'s' if attempts != 1 else ''}: infrastructure failure, not the code")

    # --------------------------------------------------------------------------------------------- sync
    def map(self, requests: Sequence[RenderRequest]) -> list[RenderResult]:
        """Render all requests across the actors; results in request order, one per request, always."""
        results: list[RenderResult | None] = [None] * len(requests)
        window = self.config.max_inflight_per_actor
        outstanding: dict[Any, _Call] = {}  # ref -> the call it answers
        with self._lock:
            num_slots = len(self.actors)
        if not num_slots and requests:
            raise RuntimeError("RenderPool is closed")
        per_actor = [0] * num_slots  # this call's outstanding requests per slot
        attempts = [0] * len(requests)
        pending = list(range(len(requests)))[::-1]  # a stack: resent requests go out first
        while pending or outstanding:
            # Submit while some actor has room (backpressure: never more than `window` per actor).
            while pending and min(per_actor) < window:
                slot = per_actor.index(min(per_actor))
                i = pending.pop()
                handle = self._actor_at(slot)
                attempts[i] += 1
                ref = handle.render.remote(requests[i])
                outstanding[ref] = _Call(i, slot, handle, time.monotonic() + self._deadline_s(requests[i]))
                per_actor[slot] += 1
            refs = list(outstanding)
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            if ready and len(refs) > 1:  # collect everything else that is done too
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                call = outstanding.pop(ref)
                per_actor[call.slot] -= 1
                try:
                    results[call.index] = ray.get(ref, timeout=10)
                except RayActorError as e:  # the actor (process, node) is gone, not the code's fault
                    self._replace_actor(call.handle, f"died ({type(e).__name__})")
                    self._after_infra_failure(call.index, attempts, pending, results,
                                              f"render actor died ({type(e).__name__})")
                except Exception as e:  # noqa: BLE001 - never lose a sample
                    results[call.index] = RenderResult.fail(
                        RenderFailure.CRASHED, f"render call failed: {type(e).__name__}: {e}")
            # Hung actors: the handles (by identity) holding a request past its deadline, from a fresh view.
            now = time.monotonic()
            hung = {call.handle for call in outstanding.values() if now > call.deadline}
            for handle in hung:
                for ref, call in list(outstanding.items()):  # this actor's requests only
                    if call.handle != handle:
                        continue
                    outstanding.pop(ref)
                    per_actor[call.slot] -= 1
                    _cancel(ref)
                    self._after_infra_failure(call.index, attempts, pending, results, "render actor timed out")
                self._replace_actor(handle, "hung (no answer before its deadline)")
        return results  # type: ignore[return-value]

    def _after_infra_failure(self, i: int, attempts: list[int], pending: list[int],
                             results: list[RenderResult | None], why: str) -> None:
        final = self._resend_or_crash(attempts[i], why)
        if final is None:
            pending.append(i)
        else:
            results[i] = final

    # -------------------------------------------------------------------------------------------- async
    async def render_async(self, request: RenderRequest) -> RenderResult:
        """For asyncio drivers: callers beyond `max_inflight_per_actor` per actor wait here (backpressure)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._async_slots is None or self._async_slots[0] is not loop:  # a semaphore binds to one loop
                self._async_slots = (loop, asyncio.Semaphore(len(self.actors) * self.config.max_inflight_per_actor))
            slots = self._async_slots[1]
        async with slots:
            return await self._render_async(request)

    async def _render_async(self, request: RenderRequest) -> RenderResult:
        attempts = 0
        while True:
            with self._lock:
                if not self.actors:
                    raise RuntimeError("RenderPool is closed")
                slot = self._next % len(self.actors)
                self._next += 1
                handle = self.actors[slot]
            attempts += 1
            ref = handle.render.remote(request)
            try:
                return await asyncio.wait_for(ref, timeout=self._deadline_s(request))
            except asyncio.TimeoutError:
                _cancel(ref)
                why = "render actor timed out"
                await self._replace_actor_async(handle, "hung (no answer before its deadline)")
            except RayActorError as e:
                why = f"render actor died ({type(e).__name__})"
                await self._replace_actor_async(handle, f"died ({type(e).__name__})")
            except Exception as e:  # noqa: BLE001 - never lose a sample
                return RenderResult.fail(RenderFailure.CRASHED, f"render call failed: {type(e).__name__}: {e}")
            final = self._resend_or_crash(attempts, why)
            if final is not None:
                return final

    def close(self) -> None:
        self._actors.shutdown(close=lambda actor: ray.get(actor.close.remote(), timeout=30))


def _cancel(ref) -> None:
    """Best effort: the actor that holds the call may already be gone."""
    try:
        ray.cancel(ref, force=False)
    except Exception as e:  # noqa: BLE001
        log.debug("cancelling a render call failed: %s: %s", type(e).__name__, e)


@dataclass
class _Call:
    """One request in flight on one actor, as `map` tracks it."""

    index: int  # position in the request list
    slot: int  # index into RenderPool.actors
    handle: Any  # the actor it was sent to (the slot may hold a replacement by the time it answers)
    deadline: float  # time.monotonic() after which the actor counts as hung
