"""Faults are survived and never trained on (issue: any actor can die mid-run).

- Rollout workers: one that dies is replaced by identity, the replacement serves the policy version the others
  serve (the weights synced before it takes a prompt), and the failed call is re-issued there; one that hangs
  past `rollout.timeout_s` is treated as dead; past the replacement budget the error is explicit.
- Reward replicas: an engine that dies inside a live process (every judgement an engine error) fails the health
  check, the replica is replaced and the request retried; what still fails is excluded, never scored.
- Trainer ranks: a dead rank is reported at once (not after the collective timeout).
The whole-run behaviour (the chaos run, kill -9 and resume) is in test_e2e.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from actors.reward import RewardPool
from actors.rollout import RolloutError, RolloutPool
from pipeline.critic.testing import random_samples
from pipeline.rewards.compose import infrastructure_failure
from pipeline.rollout.config import RolloutConfig
from pipeline.sample import Sample


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _prompts(k: int) -> list[Sample]:
    rng = np.random.default_rng(k)
    return [Sample(task="chart", reference_image=rng.integers(0, 255, (64, 96, 3), dtype=np.uint8),
                   prompt_id=f"p{i}",
                   messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Code."}]}])
            for i in range(k)]


class _PublishedWeights:
    """The trainer side of the object-store sync seam: one published state dict and its version."""

    weight_sync = "object_store"

    def __init__(self, state_dict, version: int):
        self.version = version
        self.state_dict = state_dict
        self.published = 0

        class _Cfg:
            call_timeout_s = 120.0

        self.cfg = _Cfg()

    def publish_weights(self):
        self.published += 1
        return ray.put(self.state_dict)


def _rollout_cfg(**kw) -> RolloutConfig:
    return RolloutConfig.model_validate({"sampling": {"n": 2, "max_new_tokens": 8}, "timeout_s": 120, **kw})


@pytest.mark.timeout(600)
def test_a_dead_rollout_worker_is_replaced_synced_and_its_prompts_reissued(ray_local, models_cfg):
    import torch

    pool = RolloutPool(models_cfg, _rollout_cfg(replicas=2), seed=0, start_timeout_s=300)
    try:
        from transformers import AutoModelForImageTextToText

        path = models_cfg.policy.path  # built by the fixture, not in the workers
        state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()}
        trainer = _PublishedWeights(state, version=3)
        pool.sync_weights(trainer)
        assert ray.get([w.version.remote() for w in pool.workers], timeout=60) == [3, 3]

        dead, alive = pool.workers
        ray.kill(dead, no_restart=True)
        out = pool.generate(0, _prompts(3))  # the call lands on the dead worker, is re-issued on its replacement
        assert len(out) == 6 and [s.prompt_id for s in out] == ["p0", "p0", "p1", "p1", "p2", "p2"]
        assert len({s.uid for s in out}) == 6  # each sample once
        assert all(s.policy_version == 3 for s in out)  # the replacement serves the version the others serve
        assert pool.replacements == 1 and pool.reissued == 1
        assert pool.workers[0] is not dead and pool.workers[1] is alive  # exactly the failed one replaced
        assert trainer.published == 1  # the replacement loaded the weights already published, no new export

        # A sync that finds a dead worker replaces it; the replacement loads that very sync's weights.
        trainer.version = 4
        ray.kill(pool.workers[1], no_restart=True)
        pool.sync_weights(trainer)
        assert ray.get([w.version.remote() for w in pool.workers], timeout=60) == [4, 4]
        assert pool.replacements == 2 and pool.workers[1] is not alive
        assert len(pool.call_all("version")) == 2
    finally:
        pool.shutdown()


@pytest.mark.timeout(600)
def test_a_hung_rollout_worker_is_treated_as_dead_and_the_budget_is_explicit(ray_local, models_cfg):
    # 1 ms for a generate call: every worker "hangs"; one replacement is allowed, then a clear error.
    pool = RolloutPool(models_cfg, _rollout_cfg(timeout_s=0.001, max_replacements=1), seed=0, start_timeout_s=300)
    try:
        first = pool.workers[0]
        with pytest.raises(RolloutError, match=r"hung in generate .*rollout.max_replacements=1"):
            pool.generate(0, _prompts(1))
        assert pool.replacements == 1 and pool.workers[0] is not first
    finally:
        pool.shutdown()


def _fingerprint_cfg(**actors):
    from pipeline.critic.config import RewardConfig

    return RewardConfig.model_validate({
        "backend": "fingerprint", "fingerprint": {"engine_error_rate": 1.0},  # the engine fails every pair
        "batching": {"max_batch": 16, "max_wait_ms": 20, "chunk_size": 2},
        "actors": {"replicas": 1, "num_cpus": 1, "request_timeout_s": 60, "health_timeout_s": 30,
                   "max_request_attempts": 2, "engine_dead_after": 2, **actors}})


@pytest.mark.timeout(300)
def test_a_dead_engine_in_a_live_replica_is_detected_replaced_and_its_samples_excluded(ray_local, models_cfg):
    pool = RewardPool(_fingerprint_cfg(max_replacements=2), models_cfg, start_timeout_s=120)
    try:
        assert pool.check_health() == {0: True}  # alive and nothing failed yet
        samples = random_samples(8, seed=3)
        stats = pool.score(samples, timeout_s=120)
        # every chunk's judgements failed in the engine: each chunk retried once, the replica whose engine
        # failed twice in a row replaced (the replacement's engine fails too: this backend always does)
        assert pool.retried_chunks >= 4 and pool.dead_engines >= 1 and pool.replacements >= 1
        assert 0 not in pool.replicas
        # what still failed is excluded (an infrastructure failure), never scored as the policy's: the engine
        # error itself, or the pool's give-up for a chunk in flight on the replica when it was replaced
        assert stats["excluded"] == 8 and stats["invalid_judgements"] == 0
        for s in samples:
            assert s.reward is None and s.excluded.startswith(("critic:backend:", "reward_unavailable:")), s.excluded
    finally:
        pool.shutdown()


def test_engine_failures_count_only_samples_that_reached_the_critic():
    from actors.reward import engine_failures
    from pipeline.rewards.base import INFRASTRUCTURE
    from pipeline.rewards.compose import Partial

    engine = Partial(uid="a", unavailable={"visual_erm": f"{INFRASTRUCTURE}critic:backend:RuntimeError"})
    judged = Partial(uid="b")
    policy = Partial(uid="c", failure="render_failure:syntax_error")
    assert infrastructure_failure(engine) == "critic:backend:RuntimeError"
    assert engine_failures([engine, policy]) == (1, 1)  # a render failure never reached the engine
    assert engine_failures([engine, judged]) == (2, 1)
    assert engine_failures([policy]) == (0, 0)


@pytest.mark.timeout(600)
def test_a_dead_trainer_rank_is_reported_at_once_not_after_the_call_timeout(ray_local, policy_dir):
    from actors.trainer import TrainerDied, TrainerGroup
    from pipeline.training.config import TrainerConfig

    cfg = TrainerConfig.model_validate({"ranks": 1, "call_timeout_s": 300, "start_timeout_s": 300})
    trainer = TrainerGroup(cfg, policy_dir, group_size=2)
    try:
        ray.kill(trainer.ranks[0], no_restart=True)
        t0 = time.monotonic()
        with pytest.raises(TrainerDied, match="its actor died"):
            trainer.publish_weights()
        assert time.monotonic() - t0 < 60  # not the 300 s call timeout
    finally:
        trainer.shutdown(graceful=False)
