"""Ray render pool: actors that each hold one zygote per CPU (chart, svg) plus Chromium (tables).

    pool = RenderPool(config.render, num_actors=2, cpus_per_actor=1)
    results = pool.map([RenderRequest("chart", code), ...])      # ordered, one RenderResult each
    result = await pool.render_async(RenderRequest("svg", svg))   # from an asyncio driver

Guarantees: every request gets a RenderResult. Bad code becomes a typed failure inside the sandbox; a crashed
zygote/browser is restarted by its renderer (the sample gets CRASHED); a dead or hung actor is replaced and
its outstanding samples get CRASHED. Backpressure: each actor renders at most `max_inflight_per_actor`
requests at a time and the driver never has more than that many outstanding per actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import ray

from pipeline.render import RENDER_KINDS, make_renderer
from pipeline.render.config import RenderConfig
from pipeline.render.result import RenderFailure, RenderRequest, RenderResult

log = logging.getLogger(__name__)
# Extra seconds on top of a request's own time limit (queueing inside the actor, Ray transport).
CALL_SLACK_S = 30.0


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
        self.served = 0

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
                self.served += 1
                queue.put_nowait(renderer)

    async def render_batch(self, requests: list[RenderRequest]) -> list[RenderResult]:
        return list(await asyncio.gather(*(self.render(r) for r in requests)))

    def stats(self) -> dict[str, int]:
        return {"served": self.served}

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()


def _node_group_selector(config) -> dict[str, str]:
    """Ray label selector of the render pool's KubeRay worker group (render.node_group), {} = any node."""
    from pipeline.placement import NODE_GROUP_LABEL

    group = getattr(config, "node_group", None)  # RenderPoolConfig has it; a bare RenderConfig does not
    return {NODE_GROUP_LABEL: group} if group else {}


class RenderPool:
    """Driver-side handle over `num_actors` RenderWorker actors with bounded in-flight requests."""

    def __init__(self, config: RenderConfig | None = None, num_actors: int = 1, cpus_per_actor: int = 1,
                 start_timeout_s: float = 180.0):
        self.config = config or RenderConfig()
        self.num_actors, self.cpus_per_actor = num_actors, cpus_per_actor
        self.start_timeout_s = start_timeout_s
        self.actors = [self._new_actor() for _ in range(num_actors)]
        self.layers = ray.get([a.ready.remote() for a in self.actors], timeout=start_timeout_s)[0]
        self._next = 0
        self._async_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _new_actor(self):
        return RenderWorker.options(
            num_cpus=self.cpus_per_actor, max_concurrency=4 * self.config.max_inflight_per_actor,
            max_restarts=0, label_selector=_node_group_selector(self.config)).remote(self.config, self.cpus_per_actor)

    def _timeout_for(self, request: RenderRequest) -> float:
        limit = request.timeout_s or getattr(self.config, request.kind, self.config.chart).timeout_s
        return limit + CALL_SLACK_S

    def _replace_actor(self, index: int) -> None:
        old = self.actors[index]
        try:
            ray.kill(old)
        except Exception:  # noqa: BLE001 - already dead
            pass
        self.actors[index] = self._new_actor()
        ray.get(self.actors[index].ready.remote(), timeout=self.start_timeout_s)

    # --------------------------------------------------------------------------------------------- sync
    def map(self, requests: Sequence[RenderRequest]) -> list[RenderResult]:
        """Render all requests across the actors; results in request order, one per request, always."""
        results: list[RenderResult | None] = [None] * len(requests)
        window = self.config.max_inflight_per_actor
        outstanding: dict = {}  # ref -> (request index, actor index, deadline)
        per_actor = [0] * len(self.actors)
        pending = list(range(len(requests)))[::-1]
        while pending or outstanding:
            # Submit while some actor has room (backpressure: never more than `window` per actor).
            while pending and min(per_actor) < window:
                actor_index = per_actor.index(min(per_actor))
                i = pending.pop()
                ref = self.actors[actor_index].render.remote(requests[i])
                # Queued behind at most `window` others on this actor's renderers.
                deadline = time.monotonic() + self._timeout_for(requests[i]) * (1 + window // max(1, self.cpus_per_actor))
                outstanding[ref] = (i, actor_index, deadline)
                per_actor[actor_index] += 1
            ready, _ = ray.wait(list(outstanding), num_returns=1, timeout=1.0)
            for ref in ready:
                i, actor_index, _ = outstanding.pop(ref)
                per_actor[actor_index] -= 1
                results[i] = self._get(ref, actor_index)
            now = time.monotonic()
            for ref, (i, actor_index, deadline) in list(outstanding.items()):
                if now > deadline:  # the actor is hung: replace it, fail what it held
                    log.warning("render actor %d hung; replacing it", actor_index)
                    self._fail_actor(actor_index, outstanding, per_actor, results, "render actor timed out")
        return results  # type: ignore[return-value]

    def _get(self, ref, actor_index: int) -> RenderResult:
        try:
            return ray.get(ref, timeout=10)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as e:
            self._replace_actor(actor_index)
            return RenderResult.fail(RenderFailure.CRASHED, f"render actor died: {type(e).__name__}")
        except Exception as e:  # noqa: BLE001 - never lose a sample
            return RenderResult.fail(RenderFailure.CRASHED, f"render call failed: {type(e).__name__}: {e}")

    def _fail_actor(self, actor_index, outstanding, per_actor, results, reason: str) -> None:
        for ref, (i, a, _) in list(outstanding.items()):
            if a == actor_index:
                outstanding.pop(ref)
                results[i] = RenderResult.fail(RenderFailure.CRASHED, reason)
                ray.cancel(ref, force=False)
        per_actor[actor_index] = 0
        self._replace_actor(actor_index)

    def render(self, request: RenderRequest) -> RenderResult:
        return self.map([request])[0]

    # -------------------------------------------------------------------------------------------- async
    async def render_async(self, request: RenderRequest) -> RenderResult:
        """For asyncio drivers: callers beyond `max_inflight_per_actor` per actor wait here (backpressure)."""
        loop = asyncio.get_running_loop()
        if self._async_slots is None or self._async_slots[0] is not loop:  # a semaphore binds to one loop
            self._async_slots = (loop, asyncio.Semaphore(len(self.actors) * self.config.max_inflight_per_actor))
        async with self._async_slots[1]:
            return await self._render_async(request)

    async def _render_async(self, request: RenderRequest) -> RenderResult:
        actor_index = self._next % len(self.actors)
        self._next += 1
        ref = self.actors[actor_index].render.remote(request)
        try:
            return await asyncio.wait_for(ref, timeout=self._timeout_for(request) * 4)
        except asyncio.TimeoutError:
            return RenderResult.fail(RenderFailure.CRASHED, "render actor did not answer in time")
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as e:
            self._replace_actor(actor_index)
            return RenderResult.fail(RenderFailure.CRASHED, f"render actor died: {type(e).__name__}")

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001
                pass
            ray.kill(actor)
        self.actors = []
