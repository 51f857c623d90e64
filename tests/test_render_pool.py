"""Ray render pool: ordered results for mixed batches, typed failures, identical pixels across zygotes,
async API, and faults: a dead or hung actor is replaced exactly once (by identity, also under concurrent `map`
calls) and its requests are resent, so they still render; code that fails in the sandbox is never resent."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import actors.render_pool as render_pool_module
from actors.render_pool import RenderPool
from pipeline.render import RenderConfig, RenderFailure, RenderRequest
from pipeline.render.result import RenderResult

CHART = "import matplotlib.pyplot as plt, numpy as np\nplt.plot(np.random.rand(20))\nplt.title('noise')\n"
SMALL_CHART = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\n"
SLOW_CHART = "import time\ntime.sleep(2)\n" + SMALL_CHART
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect x="2" y="2" width="9" height="9"/></svg>'
TABLE = "| k | v |\n|---|---|\n| a | 1 |"


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_session):
    cfg = RenderConfig()
    cfg.max_inflight_per_actor = 4
    p = RenderPool(cfg, num_actors=1, cpus_per_actor=2, start_timeout_s=180)
    yield p
    p.close()


def _wait_dead(handle, timeout_s: float = 60.0) -> None:
    """Until the killed actor answers with an actor error (ray.kill only asks)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            ray.get(handle.ready.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.1)
    raise AssertionError("killed render actor still answers")


def _alive(handle) -> bool:
    try:
        ray.get(handle.ready.remote(), timeout=60)
        return True
    except ray.exceptions.RayActorError:
        return False


def test_mixed_batch_in_order_with_typed_failures(pool):
    requests = [RenderRequest("chart", CHART) for _ in range(8)] + [
        RenderRequest("chart", "while True: pass", timeout_s=2),
        RenderRequest("chart", "import os\nos.kill(os.getppid(), 9)"),
        RenderRequest("svg", SVG), RenderRequest("svg", "<svg"),
        RenderRequest("table", TABLE), RenderRequest("table", "<p></p>"),
        RenderRequest("nope", "x"),
    ]
    results = pool.map(requests)
    assert len(results) == len(requests)
    assert [r.failure for r in results[8:]] == [
        RenderFailure.TIMEOUT, RenderFailure.SANDBOX_VIOLATION, None, RenderFailure.SYNTAX_ERROR, None,
        RenderFailure.BLANK_IMAGE, RenderFailure.INVALID_INPUT]
    charts = [r.image for r in results[:8]]
    assert all(np.array_equal(charts[0], img) for img in charts[1:]), "same code, different pixels across zygotes"
    assert pool.layers["chart"]["seccomp"].startswith("ok")


def test_map_returns_traces_only_when_asked(pool):
    traced_chart = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2], color='#ff0000')\nplt.title('t')\n"
    results = pool.map([RenderRequest("chart", traced_chart, trace=True), RenderRequest("chart", traced_chart),
                        RenderRequest("svg", SVG, trace=True)])
    assert all(r.ok for r in results), [r.detail for r in results]
    assert results[0].trace["types"] == ["bar"] and "t" in results[0].trace["texts"]
    assert set(results[0].trace["colors"]) == {"#ff0000"}
    assert results[1].trace is None and results[2].trace is None
    assert np.array_equal(results[0].image, results[1].image)


def test_async_api(pool):
    async def main():
        return await asyncio.gather(*(pool.render_async(RenderRequest("svg", SVG)) for _ in range(4)))

    results = asyncio.run(main()) + asyncio.run(main())  # a second event loop works too
    assert len(results) == 8 and all(r.ok for r in results)


def test_policy_failures_are_not_resent(pool):
    """Code that crashes or times out in the sandbox is the policy's fault: one attempt, its typed failure."""
    before = pool.stats()
    results = pool.map([RenderRequest("chart", "import ctypes\nctypes.string_at(0)"),  # segfaults its child
                        RenderRequest("chart", "while True: pass", timeout_s=2),
                        RenderRequest("chart", "raise ValueError('bad')"),
                        RenderRequest("svg", SVG)])
    assert [r.failure for r in results] == [
        RenderFailure.RUNTIME_ERROR, RenderFailure.TIMEOUT, RenderFailure.RUNTIME_ERROR, None], \
        [r.detail for r in results]
    assert pool.stats() == before, "a policy failure was resent or cost an actor"


def test_dead_actor_is_replaced_once_and_its_requests_resent(pool):
    dead = pool.actors[0]
    ray.kill(dead)
    _wait_dead(dead)
    before = pool.stats()
    requests = [RenderRequest("svg", SVG) for _ in range(8)] + [
        RenderRequest("chart", SMALL_CHART), RenderRequest("chart", SMALL_CHART),
        RenderRequest("table", TABLE), RenderRequest("table", TABLE)]
    results = pool.map(requests)
    assert len(results) == 12
    assert sum(r.ok for r in results) >= 8, [r.detail for r in results]
    assert all(r.ok for r in results), [r.detail for r in results]  # resent to the replacement: none lost
    assert [r.image.shape[:2] for r in results[:8]] == [(336, 336)] * 8  # in request order
    after = pool.stats()
    assert after["replacements"] - before["replacements"] == 1
    assert after["resent"] - before["resent"] >= 1
    assert pool.actors[0] != dead and _alive(pool.actors[0])
    again = pool.map([RenderRequest("chart", CHART), RenderRequest("table", TABLE)])
    assert all(r.ok for r in again), [r.detail for r in again]
    assert pool.stats()["replacements"] == after["replacements"]


def test_concurrent_maps_while_an_actor_is_killed(pool):
    """Two driver threads see the same death: one replacement, which nobody kills; every request renders."""
    before = pool.stats()
    victim = pool.actors[0]
    # Each thread's first request takes 2 s in the sandbox, so both threads still have requests on the actor
    # when it is killed, however fast this machine renders the rest.
    batches = {t: [RenderRequest("chart", SLOW_CHART)] + [RenderRequest("chart", SMALL_CHART) for _ in range(5)]
               + [RenderRequest("svg", SVG)] * 2 for t in range(2)}
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(3, timeout=60)

    def work(t):
        try:
            start.wait()
            results[t] = pool.map(batches[t])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in batches]
    for th in threads:
        th.start()
    start.wait()
    time.sleep(0.5)  # both threads have sent their requests; the slow charts are still rendering
    ray.kill(victim)
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "map did not return"
    assert not errors, errors
    for t, batch in batches.items():
        assert len(results[t]) == len(batch)
        assert all(r.ok for r in results[t]), [r.detail for r in results[t]]
    after = pool.stats()
    assert after["replacements"] - before["replacements"] == 1, "one death, one replacement"
    assert pool.actors[0] != victim and _alive(pool.actors[0]), "the replacement was killed"


# ---------------------------------------------------------------------------- scripted actors (no sandbox)
@ray.remote
class ScriptedWorker:
    """Stands in for RenderWorker: answers, dies on its first render, or hangs; echoes the code as detail."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour

    def ready(self) -> dict:
        return {"chart": {}}

    async def render(self, request: RenderRequest) -> RenderResult:
        if self.behaviour == "die":
            os._exit(1)
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        await asyncio.sleep(0.01)
        result = RenderResult.success(np.zeros((2, 2, 3), np.uint8))
        result.detail = request.code
        return result

    def close(self) -> None:
        pass


class ScriptedPool(RenderPool):
    """A RenderPool whose actors behave as scripted, in creation order (then "ok")."""

    def __init__(self, behaviours, num_actors=1, window=2, **kwargs):
        self.script = list(behaviours)
        cfg = RenderConfig()
        cfg.max_inflight_per_actor = window
        super().__init__(cfg, num_actors=num_actors, cpus_per_actor=1, start_timeout_s=120, **kwargs)

    def _new_actor(self):
        behaviour = self.script.pop(0) if self.script else "ok"
        return ScriptedWorker.options(num_cpus=0, max_concurrency=16, max_restarts=0).remote(behaviour)


@pytest.fixture
def scripted(ray_session):
    pools = []

    def make(*args, **kwargs):
        pools.append(ScriptedPool(*args, **kwargs))
        return pools[-1]

    yield make
    for p in pools:
        p.close()


def _codes(n):
    return [RenderRequest("svg", f"req{i}", timeout_s=0.3) for i in range(n)]


def test_resends_are_bounded_then_crashed_as_infrastructure(scripted):
    p = scripted(["die", "die", "die"], max_resends=2)  # then "ok"
    (result,) = p.map(_codes(1))
    assert result.failure == RenderFailure.CRASHED
    assert "render actor died" in result.detail and "after 3 attempts" in result.detail
    assert "infrastructure" in result.detail
    assert p.stats() == {"replacements": 3, "resent": 2}
    assert p.map(_codes(2))[1].detail == "req1"  # the last replacement ("ok") serves


def test_dead_actor_requests_resent_in_order(scripted):
    p = scripted(["die", "ok", "ok"], num_actors=2, window=2)
    results = p.map(_codes(7))
    assert [r.detail for r in results] == [f"req{i}" for i in range(7)]
    assert p.replacements == 1 and p.resent >= 1


def test_hung_actor_replaced_once_only_its_requests_resent(scripted, monkeypatch):
    monkeypatch.setattr(render_pool_module, "CALL_SLACK_S", 0.2)  # deadline (0.3 + 0.2) * (1 + 2) = 1.5 s
    p = scripted(["hang", "ok", "ok"], num_actors=2, window=2)
    t0 = time.monotonic()
    results = p.map(_codes(6))
    assert time.monotonic() - t0 < 60
    assert [r.detail for r in results] == [f"req{i}" for i in range(6)]
    assert p.replacements == 1
    assert p.resent == 2  # the two the hung actor held, not the healthy actor's


def test_concurrent_maps_one_replacement_per_death(scripted):
    p = scripted(["die", "ok"], window=2)
    out: dict[int, list] = {}
    threads = [threading.Thread(target=lambda t=t: out.__setitem__(t, p.map(_codes(5))), daemon=True)
               for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads)
    assert all([r.detail for r in out[t]] == [f"req{i}" for i in range(5)] for t in range(4)), out
    assert p.replacements == 1
    assert _alive(p.actors[0])


def test_async_dead_and_hung_actors_are_replaced_and_resent(scripted, monkeypatch):
    monkeypatch.setattr(render_pool_module, "CALL_SLACK_S", 0.2)
    p = scripted(["die", "ok"])

    async def main(pool, n):
        return await asyncio.gather(*(pool.render_async(r) for r in _codes(n)))

    results = asyncio.run(asyncio.wait_for(main(p, 4), timeout=120))
    assert [r.detail for r in results] == [f"req{i}" for i in range(4)]
    assert p.replacements == 1
    hung = scripted(["hang", "ok"])
    results = asyncio.run(asyncio.wait_for(main(hung, 2), timeout=120))
    assert [r.detail for r in results] == ["req0", "req1"] and hung.replacements == 1
    always_dead = scripted(["die", "die"], max_resends=1)
    (result,) = asyncio.run(asyncio.wait_for(main(always_dead, 1), timeout=120))
    assert result.failure == RenderFailure.CRASHED and "after 2 attempts" in result.detail
    assert always_dead.stats() == {"replacements": 2, "resent": 1}
