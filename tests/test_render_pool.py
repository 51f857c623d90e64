"""Ray render pool: ordered results for mixed batches, typed failures, identical pixels across zygotes,
async API, and a dead actor costs its samples a CRASHED result, never a lost one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from actors.render_pool import RenderPool
from pipeline.render import RenderConfig, RenderFailure, RenderRequest

CHART = "import matplotlib.pyplot as plt, numpy as np\nplt.plot(np.random.rand(20))\nplt.title('noise')\n"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect x="2" y="2" width="9" height="9"/></svg>'
TABLE = "| k | v |\n|---|---|\n| a | 1 |"


@pytest.fixture(scope="module")
def pool():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = RenderConfig()
    cfg.max_inflight_per_actor = 4
    p = RenderPool(cfg, num_actors=1, cpus_per_actor=2, start_timeout_s=180)
    yield p
    p.close()
    ray.shutdown()


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


def test_dead_actor_gives_crashed_then_pool_recovers(pool):
    ray.kill(pool.actors[0])
    results = pool.map([RenderRequest("chart", CHART) for _ in range(3)])
    assert len(results) == 3
    assert all(r.ok or r.failure == RenderFailure.CRASHED for r in results)
    assert any(r.failure == RenderFailure.CRASHED for r in results)
    again = pool.map([RenderRequest("chart", CHART), RenderRequest("table", TABLE)])
    assert all(r.ok for r in again), [r.detail for r in again]
