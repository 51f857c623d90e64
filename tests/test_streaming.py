"""Streaming scheduler with fake stages: accounting, staleness gate, failure propagation."""

import itertools
import threading
import time

import numpy as np
import pytest

from pipeline.loop.streaming import StreamError, StreamingScheduler
from pipeline.sample import Sample

N = 3  # group size


def _prompts_source(batch=4):
    counter = itertools.count()
    calls = []

    def next_prompts():
        calls.append(time.monotonic())
        return [Sample(task="svg", reference_image=np.zeros((2, 2, 3), np.uint8), prompt_id=f"p{next(counter)}")
                for _ in range(batch)]

    return next_prompts, calls


def _rollout(prompts):
    import dataclasses
    import uuid

    return [dataclasses.replace(p, uid=uuid.uuid4().hex, response_text=f"r{k}") for p in prompts for k in range(N)]


def _render(samples):
    for s in samples:
        s.code = "x"
    return samples


def _reward(samples):
    for s in samples:
        s.reward = 1.0
    return samples


def _scheduler(next_prompts, staleness, stages=None, rollouts=2):
    return StreamingScheduler(next_prompts, [_rollout] * rollouts,
                              stages or [("render", _render, 2), ("reward", _reward, 1)],
                              group_size=N, max_staleness=staleness, chunk_size=2, poll_s=0.02)


def test_every_sample_comes_back_in_complete_groups_per_step():
    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=1)
    sched.start()
    try:
        seen = set()
        for step in range(3):
            groups = sched.next_batch(step, timeout_s=30)
            assert len(groups) == 4
            for g in groups:
                assert len(g) == N and len({s.prompt_id for s in g}) == 1
                assert all(s.reward == 1.0 and s.code == "x" for s in g)
                seen.add(g[0].prompt_id)
            sched.mark_trained(step + 1)
        assert seen == {f"p{i}" for i in range(12)}  # steps get disjoint, in-order prompts
        assert sched.stats.stages["rollout"].items >= 36 and sched.stats.stages["reward"].items >= 36
    finally:
        sched.close()


@pytest.mark.parametrize("staleness", [0, 1, 2])
def test_rollouts_never_run_more_than_max_staleness_ahead(staleness):
    next_prompts, calls = _prompts_source()
    sched = _scheduler(next_prompts, staleness=staleness)
    sched.start()
    try:
        sched.next_batch(0, timeout_s=30)
        time.sleep(0.5)  # give the producer every chance to run ahead
        assert len(calls) == 1 + staleness  # steps 0..staleness drawn while the trainer is at version 0
        sched.mark_trained(1)
        deadline = time.monotonic() + 10
        while len(calls) < 2 + staleness and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(calls) == 2 + staleness
    finally:
        sched.close()


def test_a_failing_stage_stops_the_run_with_its_error():
    def broken_reward(samples):
        raise RuntimeError("reward backend exploded")

    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=0, stages=[("render", _render, 1), ("reward", broken_reward, 1)])
    sched.start()
    t0 = time.monotonic()
    with pytest.raises(StreamError, match="reward backend exploded"):
        sched.next_batch(0, timeout_s=30)
    assert time.monotonic() - t0 < 10
    sched.close()


def test_a_stage_that_swaps_samples_is_caught():
    def swapping(samples):
        return list(reversed(samples))

    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=0, stages=[("render", swapping, 1)])
    sched.start()
    with pytest.raises(StreamError, match="other samples"):
        sched.next_batch(0, timeout_s=30)
    sched.close()


def test_timeout_reports_samples_in_flight():
    gate = threading.Event()

    def stuck(samples):
        gate.wait(5)
        return samples

    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=0, stages=[("render", stuck, 1)])
    sched.start()
    with pytest.raises(StreamError, match="samples still in flight"):
        sched.next_batch(0, timeout_s=0.5)
    gate.set()
    sched.close()


def test_interrupt_stops_a_waiting_next_batch_promptly():
    """The driver's SIGINT/SIGTERM handler calls interrupt(): the trainer stops waiting within poll_s."""
    from pipeline.loop.streaming import StreamInterrupted

    gate = threading.Event()

    def slow_render(samples):
        gate.wait(10)
        return samples

    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=0, stages=[("render", slow_render, 1)])
    sched.start()
    threading.Timer(0.3, sched.interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(StreamInterrupted):
        sched.next_batch(0, timeout_s=30)
    assert 0.25 < time.monotonic() - t0 < 2
    gate.set()
    assert sched.close(timeout_s=5) == []


def test_close_waits_at_most_its_timeout_in_all_and_names_stuck_threads():
    gate = threading.Event()

    def stuck(samples):
        gate.wait(20)
        return samples

    next_prompts, _ = _prompts_source()
    sched = _scheduler(next_prompts, staleness=0, stages=[("render", stuck, 3)])
    sched.start()
    time.sleep(0.3)  # let the render threads pick up chunks and block
    t0 = time.monotonic()
    stuck_threads = sched.close(timeout_s=1.0)
    assert time.monotonic() - t0 < 2.5  # one deadline for all threads, not 1 s per thread
    assert stuck_threads and all(name.startswith("render-") for name in stuck_threads)
    gate.set()
