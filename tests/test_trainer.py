"""The trainer worker group (actors/trainer.py) on a local Ray cluster, with real image rollouts.

One 1-rank story (module fixture `one_rank`) drives what a run does: GRPO groups sampled by a RolloutWorker,
scored by hand (distinct rewards within each group), three updates, a weight sync after the first, a checkpoint
after the second, then a save that crashes. A second 1-rank group resumes from that checkpoint and must reach
the same weights after the third update. A 2-rank group (slow) checks that sharding the batch over gloo ranks
gives the same update as one rank.

Checkpoint commit logic (crash windows, pruning) is also tested without Ray.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

RAY_TIMEOUT_S = 180  # any single ray.get in this file (a rank's imports alone take ~15 s on a loaded box)
GROUP_SIZE = 2
PROMPTS_PER_BATCH = 2  # 4 samples per update: splits evenly over 1 or 2 ranks
LOG_PROB_ATOL = 1e-4  # rollout (batched HF generate) vs the engine; measured ~5e-7 in fp32
RESUME_ATOL = 1e-6
MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the code for this."}]}
]


def _trainer_cfg(ranks: int):
    from pipeline.training import TrainerConfig

    return TrainerConfig(
        lr=1e-3,  # large enough to move a random model visibly in one step
        micro_batch_size_per_device=2,
        ranks=ranks,
        num_cpus_per_rank=0.5,  # 2 ranks + a rollout worker on a 2-CPU local cluster
        threads_per_rank=1,
        start_timeout_s=RAY_TIMEOUT_S,
        call_timeout_s=RAY_TIMEOUT_S,
        collective_timeout_s=RAY_TIMEOUT_S,
    )


def _prompts(tag: str, seed: int):
    from pipeline.sample import Sample

    rng = np.random.default_rng(seed)
    return [
        Sample(
            task="chart",
            reference_image=rng.integers(0, 255, (48 + 16 * i, 64, 3), dtype=np.uint8),  # grids differ
            prompt_id=f"{tag}-p{i}",
            messages=MESSAGES,
        )
        for i in range(PROMPTS_PER_BATCH)
    ]


def _score(samples) -> list[list]:
    """Hand-made rewards, distinct within each group (so advantages are non-zero); samples → groups."""
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s.prompt_id, []).append(s)
    for members in groups.values():
        for k, s in enumerate(members):
            s.reward = float(k) + 0.1 * len(s.response_ids) / 100
    return list(groups.values())


def _max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session(policy_dir):  # the model is built (in this process) before any actor needs it
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def rollout_worker(ray_session, models_cfg):
    from actors.rollout import RolloutWorker
    from pipeline.rollout.config import RolloutConfig, SamplingConfig

    rollout_cfg = RolloutConfig(num_cpus=0.5, sampling=SamplingConfig(n=GROUP_SIZE, max_new_tokens=12))
    worker = RolloutWorker.options(num_cpus=0.5).remote(models_cfg, rollout_cfg, 0)
    ray_session.get(worker.ready.remote(), timeout=RAY_TIMEOUT_S)
    return worker


@pytest.fixture(scope="module")
def batches(ray_session, rollout_worker):
    """Three update batches of real rollouts (policy version 0), as scored GRPO groups."""
    return [
        _score(
            ray_session.get(rollout_worker.generate.remote(_prompts(f"b{i}", seed=i)), timeout=RAY_TIMEOUT_S)
        )
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def one_rank(ray_session, rollout_worker, batches, policy_dir, tmp_path_factory) -> dict:
    """The 1-rank story; returns everything the tests below look at."""
    from actors.trainer import TrainerGroup
    from pipeline.training import checkpoint

    ray = ray_session
    run_dir = tmp_path_factory.mktemp("run")
    out: dict = {"run_dir": run_dir}
    trainer = TrainerGroup(_trainer_cfg(ranks=1), policy_dir, GROUP_SIZE, run_config={"run": {"name": "t"}})
    try:
        out["start_s"] = trainer.setup_metrics["start_s"]
        out["w0"] = trainer.policy_state_dict()
        out["m1"] = trainer.update(batches[0])
        out["w1"] = trainer.policy_state_dict()

        # Weight sync, then the rollout worker samples with the new weights.
        out["sync"] = trainer.sync_weights([rollout_worker])
        out["rollout_version"] = ray.get(rollout_worker.version.remote(), timeout=RAY_TIMEOUT_S)
        fresh = ray.get(
            rollout_worker.generate.remote(_prompts("after-sync", seed=10)), timeout=RAY_TIMEOUT_S
        )
        out["fresh"] = fresh
        out["fresh_trainer_lp"] = trainer.compute_log_probs(fresh)  # policy v1
        out["fresh_initial_lp"] = trainer.compute_log_probs(fresh, reference=True)  # reference = v0 weights

        out["m2"] = trainer.update(batches[1])
        out["w2"] = trainer.policy_state_dict()
        extra = {"dataloader": {"epoch": 0, "position": 2}}
        out["ckpt2"] = trainer.save_checkpoint(run_dir, extra=extra)
        out["m3"] = trainer.update(batches[2])
        out["w3"] = trainer.policy_state_dict()

        # A save that dies after the ranks wrote their files, before the commit.
        crash = mock.patch.object(checkpoint, "commit", side_effect=RuntimeError("simulated crash"))
        with crash, pytest.raises(RuntimeError, match="simulated crash"):
            trainer.save_checkpoint(run_dir, extra={"never": "committed"})
        out["latest_after_crash"] = checkpoint.find_latest(run_dir)
        out["partial_dirs"] = [p for p in (run_dir / "checkpoints").iterdir() if ".partial-" in p.name]
        out["version"] = trainer.version
    finally:
        trainer.shutdown()
    return out


# ---------------------------------------------------------------------------------------------------------
# One rank
# ---------------------------------------------------------------------------------------------------------
def test_update_changes_weights_and_reports_metrics(one_rank):
    m1, m2 = one_rank["m1"], one_rank["m2"]
    for key in (
        "loss",
        "pg_clipfrac",
        "kl",
        "entropy",
        "grad_norm",
        "lr",
        "rollout_ratio_mean",
        "rollout_ratio_min",
        "rollout_ratio_max",
        "reward_mean",
        "update_wall_s",
    ):
        assert key in m1 and math.isfinite(m1[key]), (key, m1)
    assert m1["update_skipped"] == 0.0 and m1["grad_norm"] > 0 and m1["lr"] == pytest.approx(1e-3)
    assert m1["batch_size"] == GROUP_SIZE * PROMPTS_PER_BATCH and m1["num_groups"] == PROMPTS_PER_BATCH
    # Step 1 is on-policy: the trainer's policy is the one that sampled, so the ratio is ~1 (numerics only).
    assert abs(m1["rollout_ratio_mean"] - 1) < 0.01 and m1["rollout_ratio_max"] < 1.05
    assert m1["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first update
    # Step 2 trains on a batch sampled by version 0 with version 1: stale, the ratio and KL move away.
    assert m2["rollout_log_prob_abs_diff"] > m1["rollout_log_prob_abs_diff"]
    assert m2["kl"] > 0 and m2["staleness_max"] == 1.0
    assert one_rank["version"] == 3 and m1["version"] == 1.0

    w0, w1 = one_rank["w0"], one_rank["w1"]
    changed = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert len(changed) == len(w0), sorted(set(w0) - set(changed))  # vision tower included
    assert any("visual" in k for k in changed)
    print(
        f"\ntrainer 1 rank: start {one_rank['start_s']:.1f} s, update {m1['update_wall_s']:.2f} s "
        f"(engine step {m1['step_time_s']:.2f} s), then {m2['update_wall_s']:.2f} s; "
        f"weight sync {one_rank['sync']['weight_sync_s']:.2f} s"
    )


def test_weight_sync_reaches_the_rollout_worker(one_rank):
    assert one_rank["sync"]["synced_version"] == 1.0 and one_rank["rollout_version"] == 1
    worst_match, smallest_change = 0.0, math.inf
    for s, trainer_lp, initial_lp in zip(
        one_rank["fresh"], one_rank["fresh_trainer_lp"], one_rank["fresh_initial_lp"]
    ):
        assert s.policy_version == 1
        # The rollout now scores its own samples exactly as the updated trainer does ...
        np.testing.assert_allclose(s.response_logprobs, trainer_lp, atol=LOG_PROB_ATOL)
        # ... which is not how the initial weights score them.
        change = np.abs(np.array(s.response_logprobs) - np.array(initial_lp)).max()
        assert change > 10 * LOG_PROB_ATOL
        worst_match = max(worst_match, np.abs(np.array(s.response_logprobs) - np.array(trainer_lp)).max())
        smallest_change = min(smallest_change, change)
    print(
        f"\nweight sync: rollout vs trainer log-probs within {worst_match:.1e}; "
        f"vs initial weights >= {smallest_change:.2f}"
    )


def test_crashed_save_leaves_latest_on_the_previous_checkpoint(one_rank):
    from pipeline.training import checkpoint

    run_dir, ckpt2 = one_rank["run_dir"], one_rank["ckpt2"]
    assert ckpt2 == checkpoint.step_dir(run_dir, 2)
    assert one_rank["latest_after_crash"] == ckpt2
    assert not checkpoint.step_dir(run_dir, 3).exists()
    [partial] = one_rank["partial_dirs"]  # the ranks' files are there, but nothing points at them
    assert list((partial / checkpoint.POLICY_DIR).glob("model_world_size_1_rank_0.pt"))
    meta = checkpoint.read_meta(ckpt2)
    assert meta["step"] == 2 and meta["version"] == 2 and meta["world_size"] == 1
    assert meta["extra"] == {"dataloader": {"epoch": 0, "position": 2}}
    assert meta["config"] == {"run": {"name": "t"}} and meta["trainer_config"]["lr"] == 1e-3
    names = {p.name for p in (ckpt2 / checkpoint.POLICY_DIR).iterdir()}
    assert {
        "model_world_size_1_rank_0.pt",
        "optim_world_size_1_rank_0.pt",
        "extra_state_world_size_1_rank_0.pt",
    } <= names
    # verl's per-rank extra state: the lr schedule and every RNG a rank draws from.
    extra_state = torch.load(
        ckpt2 / checkpoint.POLICY_DIR / "extra_state_world_size_1_rank_0.pt", weights_only=False
    )
    assert extra_state["lr_scheduler"]["last_epoch"] == 2  # one scheduler step per update
    assert {"cpu", "numpy", "random"} <= set(extra_state["rng"])


def test_resume_restores_weights_and_optimizer_exactly(one_rank, batches, policy_dir):
    """A fresh group loads step 2 and trains the same third batch: same weights as the uninterrupted run.

    With AdamW, equality to 1e-6 needs the moments and step count back too: a fresh optimizer's first step
    moves every weight by ~lr (1e-3), not by what the third step of a warm optimizer does.
    """
    from actors.trainer import TrainerGroup
    from pipeline.training import checkpoint

    run_dir = one_rank["run_dir"]
    trainer = TrainerGroup(_trainer_cfg(ranks=1), policy_dir, GROUP_SIZE)
    try:
        meta = trainer.resume(run_dir)
        assert meta is not None and trainer.version == 2
        assert meta["extra"]["dataloader"]["position"] == 2
        assert _max_abs_diff(trainer.policy_state_dict(), one_rank["w2"]) == 0.0
        m3 = trainer.update(batches[2])
        w3 = trainer.policy_state_dict()
        assert trainer.version == 3
        resume_diff = _max_abs_diff(w3, one_rank["w3"])
        print(f"\nresume: max |W3(resumed) - W3(uninterrupted)| = {resume_diff:.2e}")
        assert resume_diff < RESUME_ATOL
        assert _max_abs_diff(w3, one_rank["w2"]) > 1e-4  # the third step did move the weights
        assert m3["loss"] == pytest.approx(one_rank["m3"]["loss"], rel=1e-5, abs=1e-7)

        # The next save commits step 3 (the crashed attempt's leftovers are cleaned up) ...
        path = trainer.save_checkpoint(run_dir, extra={"dataloader": {"epoch": 0, "position": 3}})
        assert checkpoint.find_latest(run_dir) == path == checkpoint.step_dir(run_dir, 3)
        assert not [p for p in (run_dir / "checkpoints").iterdir() if ".partial-" in p.name]
        # ... and saving the same step again is refused rather than overwriting the latest checkpoint.
        with pytest.raises(checkpoint.CheckpointError, match="latest checkpoint already"):
            trainer.save_checkpoint(run_dir)
        assert checkpoint.find_latest(run_dir) == path
    finally:
        trainer.shutdown()


# ---------------------------------------------------------------------------------------------------------
# Two ranks
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_match_one_rank(ray_session, batches, one_rank, policy_dir, tmp_path):
    from actors.trainer import TrainerGroup
    from pipeline.training import checkpoint

    trainer = TrainerGroup(_trainer_cfg(ranks=2), policy_dir, GROUP_SIZE)
    try:
        assert len(trainer.ranks) == 2
        m1 = trainer.update(batches[0])
        w1 = trainer.policy_state_dict()
        assert trainer.version == 1
        # Same global loss and gradient as one rank holding the whole batch, ratio stats over both shards.
        assert m1["loss"] == pytest.approx(one_rank["m1"]["loss"], rel=1e-4, abs=1e-6)
        assert m1["grad_norm"] == pytest.approx(one_rank["m1"]["grad_norm"], rel=1e-4)
        assert m1["response_tokens"] == one_rank["m1"]["response_tokens"]
        assert m1["rollout_ratio_mean"] == pytest.approx(one_rank["m1"]["rollout_ratio_mean"], abs=1e-5)
        w0 = one_rank["w0"]
        assert all(not torch.equal(w0[k], w1[k]) for k in w0)
        rank_diff = _max_abs_diff(w1, one_rank["w1"])
        assert rank_diff < 1e-4
        m2 = trainer.update(batches[1])
        assert trainer.version == 2 and m2["kl"] > 0

        # Refused before any rank is called (so the group stays usable): a batch FSDP ranks cannot share
        # evenly, and a checkpoint whose per-rank shards were written by a different number of ranks.
        with pytest.raises(ValueError, match="does not split evenly over 2 trainer ranks"):
            trainer.update([batches[2][0][:1], batches[2][1]])
        with pytest.raises(checkpoint.CheckpointError, match="saved by 1 trainer rank"):
            trainer.load_checkpoint(one_rank["ckpt2"])
        assert trainer.version == 2

        started = time.perf_counter()
        path = trainer.save_checkpoint(tmp_path)  # per-rank shards, both ranks
        save_s = time.perf_counter() - started
        assert {p.name for p in (path / checkpoint.POLICY_DIR).glob("model_world_size_2_rank_*.pt")} == {
            "model_world_size_2_rank_0.pt",
            "model_world_size_2_rank_1.pt",
        }
        print(
            f"\ntrainer 2 ranks: start {trainer.setup_metrics['start_s']:.1f} s, update {m1['update_wall_s']:.2f} s"
            f" (engine step {m1['step_time_s']:.2f} s), then {m2['update_wall_s']:.2f} s; checkpoint save "
            f"{save_s:.2f} s; max |W1(2 ranks) - W1(1 rank)| = {rank_diff:.1e}"
        )
    finally:
        trainer.shutdown()

    assert checkpoint.read_meta(path)["world_size"] == 2  # a 1-rank group refuses it (load_checkpoint)


def test_unplaceable_group_fails_fast_with_a_reason(ray_session, policy_dir):
    from actors.trainer import TrainerError, TrainerGroup

    cfg = _trainer_cfg(ranks=2).model_copy(update={"num_cpus_per_rank": 4.0, "start_timeout_s": 2.0})

    with pytest.raises(TrainerError, match="could not be placed within 2 s"):
        TrainerGroup(cfg, policy_dir, GROUP_SIZE)


# ---------------------------------------------------------------------------------------------------------
# Checkpoint commit logic (no Ray, no model)
# ---------------------------------------------------------------------------------------------------------
def _fake_save(run_dir: Path, step: int, commit: bool = True) -> Path:
    from pipeline.training import checkpoint

    staging = checkpoint.begin_save(run_dir, step)
    (staging / checkpoint.POLICY_DIR).mkdir()
    (staging / checkpoint.POLICY_DIR / "model_world_size_1_rank_0.pt").write_bytes(b"weights")
    if not commit:
        return staging
    return checkpoint.commit(run_dir, staging, step, {"version": step, "world_size": 1, "extra": {}})


def test_checkpoint_commit_protocol(tmp_path):
    from pipeline.training import checkpoint

    assert checkpoint.find_latest(tmp_path) is None and checkpoint.list_checkpoints(tmp_path) == []
    first = _fake_save(tmp_path, 2)
    assert checkpoint.find_latest(tmp_path) == first and checkpoint.read_meta(first)["step"] == 2

    # Crash while the ranks write: staging only; latest unchanged; the next save removes the leftovers.
    staging = _fake_save(tmp_path, 4, commit=False)
    assert checkpoint.find_latest(tmp_path) == first and staging.exists()
    # Crash inside commit, after meta.json was written but before the rename: still invisible.
    crash = mock.patch.object(checkpoint.os, "rename", side_effect=OSError("crash before rename"))
    with crash, pytest.raises(OSError):
        _fake_save(tmp_path, 4)
    assert checkpoint.find_latest(tmp_path) == first and not checkpoint.step_dir(tmp_path, 4).exists()
    # Crash after the rename, before `latest` moved: step_4 exists, complete but unreferenced.
    real_write = checkpoint._atomic_write_text

    def crash_on_pointer(path, text):
        if path.name == checkpoint.LATEST_FILE:
            raise OSError("crash before pointer")
        real_write(path, text)

    with (
        mock.patch.object(checkpoint, "_atomic_write_text", side_effect=crash_on_pointer),
        pytest.raises(OSError),
    ):
        _fake_save(tmp_path, 4)
    assert checkpoint.find_latest(tmp_path) == first and checkpoint.step_dir(tmp_path, 4).exists()
    # Resuming from step 2 and saving step 4 again replaces the unreferenced directory.
    second = _fake_save(tmp_path, 4)
    assert checkpoint.find_latest(tmp_path) == second
    assert not [p for p in checkpoint.checkpoints_root(tmp_path).iterdir() if ".partial-" in p.name]
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [2, 4]

    with pytest.raises(checkpoint.CheckpointError, match="latest checkpoint already"):
        _fake_save(tmp_path, 4)
    _fake_save(tmp_path, 6)
    assert checkpoint.prune(tmp_path, keep=2) == [checkpoint.step_dir(tmp_path, 2)]
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 6]

    # A pointer to something incomplete is an error, never a silent fallback to another checkpoint.
    (checkpoint.step_dir(tmp_path, 6) / checkpoint.META_FILE).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="not complete"):
        checkpoint.find_latest(tmp_path)


def test_rank_metrics_are_combined_token_weighted():
    from pipeline.training.metrics import combine_rank_metrics

    rank0 = {
        "loss": 0.5,
        "grad_norm": 2.0,
        "lr": 1e-3,
        "entropy": 1.0,
        "rollout_ratio_mean": 1.0,
        "rollout_ratio_min": 0.9,
        "rollout_ratio_max": 1.1,
        "response_tokens": 30.0,
        "step_time_s": 1.0,
    }
    rank1 = {
        **rank0,
        "entropy": 3.0,
        "rollout_ratio_mean": 2.0,
        "rollout_ratio_min": 0.5,
        "rollout_ratio_max": 4.0,
        "response_tokens": 10.0,
        "step_time_s": 2.0,
        "loss": 99.0,
    }
    combined = combine_rank_metrics([rank0, rank1])
    assert combined["loss"] == 0.5  # global: rank 0's
    assert combined["entropy"] == pytest.approx(1.5) and combined["rollout_ratio_mean"] == pytest.approx(1.25)
    assert (combined["rollout_ratio_min"], combined["rollout_ratio_max"]) == (0.5, 4.0)
    assert combined["response_tokens"] == 40.0 and combined["step_time_s"] == 2.0
