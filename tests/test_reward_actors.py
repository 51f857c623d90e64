"""Reward actors: micro-batching (B items or T ms), N replicas with load balancing, a dead replica replaced
and its in-flight requests retried elsewhere, and every result attached to its own sample under concurrency.
The identity checks use the fingerprint backend, whose answer is a function of the image pair, so a mix-up
is detected; the tiny HF reward model also runs across two replicas."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeline.critic.backends.fingerprint import expected_answer
from pipeline.critic.batcher import MicroBatcher
from pipeline.critic.testing import random_samples, tiny_reward_config

ray = pytest.importorskip("ray")

from actors.reward import RewardPool


# ---------------------------------------------------------------------------------------------------------
# The batcher alone (no Ray)
# ---------------------------------------------------------------------------------------------------------
def test_batcher_collects_up_to_B_items_or_T_ms_and_returns_each_callers_results():
    seen = []

    def fn(items):
        seen.append(list(items))
        time.sleep(0.01)
        return [x * 10 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=4, max_wait_s=0.2)
        t0 = time.monotonic()
        results = await asyncio.gather(*(b.submit([i, 100 + i]) for i in range(5)))  # 10 items
        full = time.monotonic() - t0
        t0 = time.monotonic()
        lone = await b.submit([7])
        waited = time.monotonic() - t0
        return results, full, lone, waited, b.batches

    results, full, lone, waited, batches = asyncio.run(asyncio.wait_for(main(), 30))
    assert results == [[i * 10, (100 + i) * 10] for i in range(5)]
    assert batches == [4, 4, 2, 1]
    assert sorted(x for batch in seen[:3] for x in batch) == sorted([*range(5), *range(100, 105)])
    assert lone == [70]
    assert 0.18 <= waited < 1.0  # a lone request waits for T, then runs alone
    assert full < 1.0  # full batches never wait for T... only the remainder (2 items) did, once


def test_batcher_hands_a_failure_to_every_caller_of_that_batch_only():
    def fn(items):
        if "bad" in items:
            raise RuntimeError("model crashed")
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=2, max_wait_s=0.05)
        first = await asyncio.gather(b.submit(["a"]), b.submit(["bad"]), return_exceptions=True)
        second = await b.submit(["c", "d"])
        return first, second

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(isinstance(r, RuntimeError) for r in first)
    assert second == ["c", "d"]  # the worker survives a failed batch


def test_batcher_keeps_several_batches_in_flight_for_a_continuous_engine():
    """concurrency=3: a new batch goes out while earlier ones still run (an engine with continuous batching takes
    them all); with one slot, the next batch waits for the running one (an engine serving one call at a time)."""
    def run(concurrency):
        running, peak, lock = [0], [0], threading.Lock()

        def fn(items):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.2)
            with lock:
                running[0] -= 1
            return items

        async def main():
            b = MicroBatcher(fn, max_batch=2, max_wait_s=0.01, concurrency=concurrency)
            t0 = time.monotonic()
            out = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(6)))
            return out, time.monotonic() - t0, b.batches, b.peak_batches_running

        return (*asyncio.run(asyncio.wait_for(main(), 30)), peak[0])

    out, wall, batches, peak_batches, peak_calls = run(3)
    assert out == [[i, i + 100] for i in range(6)] and sorted(batches) == [2] * 6
    assert peak_batches == peak_calls == 3 and wall < 0.2 * 6 * 0.75  # overlapped, not one after another
    out, wall, batches, peak_batches, peak_calls = run(1)
    assert out == [[i, i + 100] for i in range(6)] and peak_batches == peak_calls == 1 and wall >= 0.2 * 6


def test_batch_concurrency_fills_a_continuous_engine_and_is_refused_for_a_serial_one():
    from pipeline.critic.config import RewardConfig

    assert RewardConfig().batch_concurrency() == 1  # hf: one generate at a time
    assert RewardConfig(backend="vllm", vllm={"engine": "llm"}).batch_concurrency() == 1
    vllm = RewardConfig(backend="vllm", vllm={"engine": "async", "max_num_seqs": 64}, batching={"max_batch": 16})
    assert vllm.batch_concurrency() == 8  # twice the batches that fill its 64 sequence slots
    with pytest.raises(ValueError, match="serves one call at a time"):
        RewardConfig(batching={"concurrency": 2})


# ---------------------------------------------------------------------------------------------------------
# Ray replicas
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _fingerprint_cfg(**kw):
    from pipeline.critic.config import RewardConfig

    data = {"backend": "fingerprint", "fingerprint": {"delay_ms_per_call": 5, "delay_ms_per_pair": 1},
            "batching": {"max_batch": 16, "max_wait_ms": 20, "chunk_size": 1},
            "actors": {"replicas": 2, "num_cpus": 1, "request_timeout_s": 60, "health_timeout_s": 30}}
    for key, value in kw.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return RewardConfig.model_validate(data)


def _check_identity(samples, cfg):
    for s in samples:
        assert s.failure is None, s.failure
        expected = expected_answer(s.task, s.reference_image, s.rendered_image, cfg.max_image_side)
        assert s.discrepancies == expected["errors"], s.uid
        assert s.extra["judgement"]["counts"] == expected["counts"]
        assert s.reward_breakdown["visual_erm_official/severity"] == sum(e["severity"] for e in expected["errors"])


def test_500_concurrent_requests_across_2_replicas_each_result_matched_to_its_sample(ray_local, models_cfg):
    cfg = _fingerprint_cfg()
    pool = RewardPool(cfg, models_cfg, start_timeout_s=120)
    try:
        samples = random_samples(500, seed=11)
        fps = {expected_answer(s.task, s.reference_image, s.rendered_image, 1024)["errors"][0]["description"]
               for s in samples if expected_answer(s.task, s.reference_image, s.rendered_image, 1024)["errors"]}
        assert len(fps) > 300  # distinct pairs give distinct answers: a swap cannot go unnoticed
        # Four callers at once, 125 samples each, one remote request per sample: 500 requests in flight.
        parts = [samples[i::4] for i in range(4)]
        stats, errors = [None] * 4, []

        def call(k):
            try:
                stats[k] = pool.score(parts[k], timeout_s=120)
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors and all(st is not None for st in stats)
        assert sum(st["samples"] for st in stats) == 500 and all(st["failed"] == 0 for st in stats)
        _check_identity(samples, cfg)
        replica_stats = pool.stats()
        assert len(replica_stats) == 2
        measured = [r["measured"] for r in replica_stats]
        assert sum(measured) == 500 and min(measured) >= 100  # both replicas did a fair share
        assert max(max(r["batches"]) for r in replica_stats) > 1  # requests were batched together
        assert all(max(r["batches"]) <= 16 for r in replica_stats)  # never more than B
    finally:
        pool.shutdown()


def test_a_dead_replica_is_replaced_and_its_requests_retried_elsewhere(ray_local, models_cfg):
    cfg = _fingerprint_cfg(fingerprint={"delay_ms_per_call": 40, "delay_ms_per_pair": 2},
                           batching={"max_batch": 8, "max_wait_ms": 10, "chunk_size": 4})
    pool = RewardPool(cfg, models_cfg, start_timeout_s=120)
    try:
        victim = pool.replicas[0]
        killed = threading.Event()

        def kill_when_busy():  # kill the replica while it holds requests, not before or after
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if ray.get(victim.ping.remote(), timeout=30)["pending"] > 0:
                    ray.kill(victim, no_restart=True)
                    killed.set()
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        samples = random_samples(200, seed=12)
        stats = pool.score(samples, timeout_s=150)
        killer.join(timeout=60)
        assert killed.is_set()
        assert stats["failed"] == 0 and stats["samples"] == 200
        assert pool.replacements == 1 and pool.retried_chunks >= 1
        assert sorted(pool.replicas) == [1, 2]
        _check_identity(samples, cfg)
        assert pool.check_health() == {1: True, 2: True}
    finally:
        pool.shutdown()


def test_health_check_replaces_a_dead_replica_and_no_replica_left_excludes_the_samples(ray_local, models_cfg):
    cfg = _fingerprint_cfg(actors={"replicas": 1, "max_replacements": 1})
    pool = RewardPool(cfg, models_cfg, start_timeout_s=120)
    try:
        ray.kill(pool.replicas[0], no_restart=True)
        time.sleep(0.5)
        assert pool.check_health() == {0: False}
        assert list(pool.replicas) == [1] and pool.replacements == 1
        ray.kill(pool.replicas[1], no_restart=True)  # the replacement budget is now spent
        samples = random_samples(6, seed=13)
        stats = pool.score(samples, timeout_s=60)
        # an infrastructure failure: excluded from the update and counted, never scored as the policy's
        assert stats["excluded"] == 6 and stats["failed"] == 0 and pool.replicas == {}
        for s in samples:
            assert s.reward is None and s.failure is None and s.excluded.startswith("reward_unavailable:")
            assert s.reward_breakdown == {"excluded": 1.0}
    finally:
        pool.shutdown()


def test_tiny_hf_reward_model_on_2_replicas(ray_local, models_cfg):
    cfg = tiny_reward_config(actors={"replicas": 2, "num_cpus": 1, "request_timeout_s": 300},
                             batching={"max_batch": 8, "max_wait_ms": 50, "chunk_size": 2},
                             hf={"max_batch_size": 8, "num_threads": 1})
    models = models_cfg  # built once by the fixture (pipeline.tiny.ensure_models), not in each replica
    pool = RewardPool(cfg, models, start_timeout_s=180)
    try:
        samples = random_samples(24, seed=14)
        stats = pool.score(samples, timeout_s=300)
        assert stats["failed"] == 0 and stats["invalid_judgements"] == 0
        # official form (the default): charts/SVG in [1, 2], tables −S
        assert all(s.extra["judgement"]["valid"] and (1.0 <= s.reward <= 2.0 if s.task != "table" else s.reward <= 0)
                   for s in samples)
        assert [r["measured"] > 0 for r in pool.stats()] == [True, True]
    finally:
        pool.shutdown()


def test_requests_to_a_hung_replica_time_out_into_explicit_exclusions(ray_local, models_cfg):
    cfg = _fingerprint_cfg(fingerprint={"delay_ms_per_call": 4000},
                           actors={"replicas": 1, "request_timeout_s": 0.5, "max_request_attempts": 2,
                                   "health_timeout_s": 5})
    pool = RewardPool(cfg, models_cfg, start_timeout_s=120)
    try:
        samples = random_samples(2, seed=15)
        t0 = time.monotonic()
        stats = pool.score(samples, timeout_s=30)
        assert time.monotonic() - t0 < 10
        assert stats["excluded"] == 2 and pool.retried_chunks == 2  # one chunk per sample, each retried once
        for s in samples:
            assert s.excluded == "reward_unavailable:timeout (after 2 attempts)" and s.reward is None
        assert pool.replacements == 0  # slow, not dead: it still answers health checks
    finally:
        pool.shutdown()
