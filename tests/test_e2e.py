"""End to end on CPU: `pipeline/main.py` with the tiny policy and tiny RM on all three tasks, as a user runs it.

- a 2-rank trainer run: policy weights move (beyond weight decay), rollout workers use the synced versions,
  every sample is scored (failures counted), checkpoints hold the trained weights;
- graceful shutdown: SIGTERM (what `ray job stop` sends) mid-run saves the last completed version, exits 143,
  and the checkpoint resumes; a double Ctrl-C aborts fast with exit 130; neither leaves a process behind.

Reward values are not asserted (the tiny policy rarely writes code that renders): only counts, versions and
weights. (The resume-from-the-last-step test of the plain default run is in test_main.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from pipeline.config import REPO_ROOT

MAIN = str(REPO_ROOT / "pipeline" / "main.py")
TASKS = {"chart", "table", "svg"}


@pytest.fixture(scope="module")
def caches(run_caches) -> list[str]:
    return run_caches


def _cmd(run_dir: Path, caches: list[str], *overrides: str) -> list[str]:
    return [sys.executable, MAIN, "ray.address=local", f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}",
            "logging.wandb.mode=disabled", "data.synth_eval_per_task=0", *caches, *overrides]


def _env() -> dict[str, str]:
    return dict(os.environ, RAY_ADDRESS="")  # never join a cluster some other process left running


def _run(run_dir: Path, caches: list[str], *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(run_dir, caches, *overrides), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=run_dir.parent, env=_env())


def _step_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/version" in r]


def _checkpoint_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The full policy state dict from a checkpoint's per-rank FSDP2 shards (DTensors sharded on one dim)."""
    shards = sorted((step_dir / "policy").glob("model_world_size_*_rank_*.pt"),
                    key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert shards, f"no policy shards in {step_dir}"
    per_rank = [torch.load(p, map_location="cpu", weights_only=False) for p in shards]
    full = {}
    for name, first in per_rank[0].items():
        if not hasattr(first, "placements"):
            full[name] = first
            continue
        placement = first.placements[0]
        if placement.is_shard():
            full[name] = torch.cat([sd[name].to_local() for sd in per_rank], dim=placement.dim)
        else:
            full[name] = first.to_local()
    return full


def _initial_weights(model_path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = {}
    for f in sorted(Path(model_path).glob("*.safetensors")):
        weights.update(load_file(f))
    return weights


def _run_processes(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _survivors(snapshot: list[psutil.Process], pgid: int, wait_s: float = 20.0) -> list[str]:
    """Processes of the run still alive after it exited: any from the snapshot of its tree (same pid AND
    start time, so a recycled pid does not count), or any in its process group."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = [p for p in snapshot if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE and p not in alive:
                    alive.append(p)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        if not alive or time.monotonic() > deadline:
            out = []
            for p in alive:
                try:
                    out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                except psutil.NoSuchProcess:
                    continue
            return out
        time.sleep(0.5)


# Generous limits: on a shared 2-core box the tiny policy's warm start (session fixture) and Ray's start-up
# alone can take minutes; the runs themselves take 1-2 minutes on an idle machine.
E2E_TIMEOUT_S = 1800


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_two_rank_run_trains_syncs_versions_and_scores_every_sample(tmp_path, caches):
    run_dir = tmp_path / "runs" / "e2e"
    run_dir.parent.mkdir(parents=True)
    prompts, n, steps, staleness = 3, 4, 3, 1
    t0 = time.monotonic()
    proc = _run(run_dir, caches, f"run.total_steps={steps}", f"data.prompts_per_step={prompts}",
                f"rollout.sampling.n={n}", f"stream.max_staleness={staleness}",
                # 2 trainer ranks in 2 cores: rollout, render, reward 0.5 CPU each, the ranks 0.25 each
                "trainer.ranks=2", "trainer.num_cpus_per_rank=0.25", "trainer.save_every_steps=2",
                "trainer.micro_batch_size_per_device=3",  # 12 samples = 6 per rank = 2 micro-batches
                # an entropy bonus gives every update a gradient whatever the rewards (the tiny policy's are
                # often all equal, which zeroes GRPO advantages), so "weights moved" does not hinge on luck
                "trainer.entropy_coeff=0.01",
                # the learned critic's path end to end (the embedded default's is the structural oracle)
                "reward.backend=hf")
    runtime = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 trainer rank(s)" in proc.stderr

    records = _step_records(run_dir)
    assert [r["step"] for r in records] == list(range(steps))
    tasks_seen = set()
    for r in records:
        step = r["step"]
        # every sample of the step came back scored: a failure is a scored sample with its reason counted
        assert r["samples/samples"] == prompts * n and r["samples/groups"] == prompts
        assert r["samples/scored"] == prompts * n and r["samples/reward/missing"] == 0, (r, proc.stderr[-4000:])
        reasons = sum(v for k, v in r.items() if k.startswith("samples/failures/"))
        assert reasons == r["samples/failed"], r
        # rollouts used the synced weights: step s was generated by version >= s - max_staleness
        assert r["samples/policy_version/min"] >= max(0, step - staleness), r
        assert r["train/version"] == step + 1
        assert r["train/grad_norm"] > 0
        tasks_seen |= {k.split("/")[2] for k in r if k.startswith("samples/reward/") and k.endswith("/mean")
                       and k.count("/") == 3}
    assert records[-1]["samples/policy_version/max"] >= 1, "the rollout workers never reported a new version"
    assert tasks_seen == TASKS

    # Checkpoints: every 2 updates and the final one; the final holds weights that moved from the initial
    # model by more than weight decay alone can explain (AdamW decay alone gives w0 * (1 - lr * wd)^k).
    checkpoints = run_dir / "checkpoints"
    assert {p.name for p in checkpoints.glob("step_*")} == {"step_2", f"step_{steps}"}
    meta = json.loads((checkpoints / f"step_{steps}" / "meta.json").read_text())
    assert meta["version"] == steps and meta["world_size"] == 2
    trained = _checkpoint_weights(checkpoints / f"step_{steps}")
    initial = _initial_weights(meta["model_path"])
    lr, wd = meta["trainer_config"]["lr"], meta["trainer_config"]["weight_decay"]
    decay = (1 - lr * wd) ** steps
    common = [k for k in trained if k in initial]
    assert len(common) >= len(trained) * 0.9, (sorted(trained)[:5], sorted(initial)[:5])
    moved = max((trained[k].float() - initial[k].float()).abs().max().item() for k in common)
    beyond_decay = max((trained[k].float() - initial[k].float() * decay).abs().max().item() for k in common)
    decay_only = max((initial[k].float() * (1 - decay)).abs().max().item() for k in common)
    assert moved > 0
    assert beyond_decay > 10 * decay_only, (beyond_decay, decay_only)
    print(f"e2e 2-rank run: {runtime:.0f} s; max |w - w0| {moved:.2e}, beyond decay {beyond_decay:.2e}, "
          f"decay alone {decay_only:.2e}")


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_revision_episodes_train_both_turns_and_engine_errors_are_excluded_not_scored(tmp_path, caches):
    """rollout.revision_rounds=1: each answer is revised once with the critic's feedback and both turns train;
    the held-out evaluation reports each revision round. The critic is the deterministic stand-in, whose engine
    fails on ~30% of the pairs (on every attempt): those samples are excluded from the update, never scored."""
    run_dir = tmp_path / "runs" / "revise"
    run_dir.parent.mkdir(parents=True)
    prompts, n, steps = 2, 4, 2
    proc = _run(run_dir, caches, f"run.total_steps={steps}", f"data.prompts_per_step={prompts}",
                f"rollout.sampling.n={n}", "rollout.revision_rounds=1", "data.synth_eval_per_task=1",
                "run.eval_revision_rounds=1", "revision.stop_when_clean=false", "trainer.micro_batch_size_per_device=4",
                "reward.backend=fingerprint", "reward.fingerprint.engine_error_rate=0.3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = _step_records(run_dir)
    assert [r["step"] for r in records] == list(range(steps))
    excluded = 0
    for r in records:
        for turn in ("samples", "samples_revised"):  # first answers, then their revisions
            # every sample accounted for: scored (a failure reward counts) or excluded, never lost
            assert r[f"{turn}/samples"] == prompts * n and r[f"{turn}/groups"] == prompts, r
            assert r[f"{turn}/scored"] + r[f"{turn}/excluded"] == prompts * n and r[f"{turn}/reward/missing"] == 0
            assert r[f"{turn}/judgement/invalid"] == 0  # an engine error is not an invalid answer
            excluded += r[f"{turn}/excluded"]
        assert r["reward_batch/excluded"] == r["samples/excluded"] == r.get("samples/excluded/critic", 0), (
            r, proc.stderr[-4000:])
        assert r["train/version"] == r["step"] + 1
    assert excluded > 0, "no injected engine error reached the samples"
    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "eval/revision/round1/revised" in r]
    assert evals, "no held-out evaluation with revision rounds was logged"
    assert evals[-1]["eval/revision/round1/revised"] == 3  # one held-out prompt per task, each revised
    assert {"eval/revision/round0/reward", "eval/revision/round1/reward"} <= set(evals[-1])


def _start(run_dir: Path, caches: list[str], *overrides: str) -> tuple[subprocess.Popen, Path]:
    log_path = run_dir.parent / f"{run_dir.name}.log"
    log_file = log_path.open("w")
    # Its own session = its own process group, as a terminal gives a foreground job: Ctrl-C goes to the group.
    proc = subprocess.Popen(_cmd(run_dir, caches, *overrides), stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=run_dir.parent, env=_env(), start_new_session=True)
    log_file.close()
    return proc, log_path


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, log_path: Path, step: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(r["step"] >= step for r in _step_records(run_dir)):
        assert proc.poll() is None, f"run ended early ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} within {timeout_s:g} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> float:
    t0 = time.monotonic()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail(f"still running {timeout_s:g} s after the signal:\n{log_path.read_text()[-3000:]}")
    return time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_sigterm_saves_the_last_completed_version_exits_143_and_resumes(tmp_path, caches):
    run_dir = tmp_path / "runs" / "term"
    run_dir.parent.mkdir(parents=True)
    proc, log_path = _start(run_dir, caches, "run.total_steps=50", "trainer.save_every_steps=0")
    try:
        _wait_for_step(proc, run_dir, log_path, step=1, timeout_s=900)
        tree = _run_processes(proc.pid)
        assert len(tree) > 3, "expected the driver, Ray's daemons and the actors"
        # To the driver alone, as `kill`, `timeout` or Kubernetes do (`ray job stop` signals the entrypoint and
        # its children; on a cluster the Ray daemons and actors are not among them, here they would be).
        os.kill(proc.pid, signal.SIGTERM)
        stop_s = _stop(proc, log_path, timeout_s=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = log_path.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert "SIGTERM: stopping after the current update" in log
    assert not _survivors(tree, proc.pid)

    # The final checkpoint is the last update that completed (the trainer finished it before stopping).
    last_version = _step_records(run_dir)[-1]["train/version"]
    latest = run_dir / "checkpoints" / "latest"
    assert latest.exists(), log[-3000:]
    step_dir = run_dir / "checkpoints" / f"step_{int(last_version)}"
    assert json.loads((step_dir / "meta.json").read_text())["version"] == last_version
    assert _checkpoint_weights(step_dir)  # the shards load
    print(f"SIGTERM: exited {stop_s:.1f} s after the signal, checkpoint version {last_version}")

    # ...and the run resumes from it.
    resumed = _run(run_dir, caches, f"run.total_steps={int(last_version) + 1}", "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {int(last_version)}" in resumed.stderr
    assert _step_records(run_dir)[-1]["step"] == last_version


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_second_ctrl_c_aborts_fast_without_leaving_processes(tmp_path, caches):
    run_dir = tmp_path / "runs" / "abort"
    run_dir.parent.mkdir(parents=True)
    proc, log_path = _start(run_dir, caches, "run.total_steps=50", "trainer.save_every_steps=0")
    try:
        _wait_for_step(proc, run_dir, log_path, step=1, timeout_s=900)
        tree = _run_processes(proc.pid)
        # Two signals back to back. Not the same one twice: a pending signal is not queued again, so a second
        # SIGINT sent at once may merge into the first, and one sent later can land after the (fast) graceful
        # save, when there is nothing left to abort. SIGINT then SIGTERM are both delivered, in that order,
        # before the driver reaches its save: the first asks for a graceful stop, the second aborts. (SIGINT to
        # the group as a terminal's Ctrl-C does; SIGTERM to the driver alone, as `kill` does.)
        os.killpg(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGTERM)
        stop_s = _stop(proc, log_path, timeout_s=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = log_path.read_text()
    assert proc.returncode == 128 + signal.SIGINT, log[-3000:]
    assert "aborted without saving" in log
    assert not _survivors(tree, proc.pid)
    print(f"double Ctrl-C: exited {stop_s:.1f} s after the second signal")


# ---------------------------------------------------------------------------------------------------------
# Faults: a run survives actor deaths, and a driver killed with -9 resumes where it stood
# ---------------------------------------------------------------------------------------------------------
def _expected_order(caches: list[str], steps: int, *overrides: str) -> list[list[str]]:
    """The prompts the loader gives each step: what any run of this config must train on, faults or not."""
    from pipeline.config import load_config
    from pipeline.data.datasets import prepare_datasets
    from pipeline.data.loader import PromptLoader

    cfg = load_config(None, ["data.synth_eval_per_task=0", *caches, *overrides])
    train, _ = prepare_datasets(cfg.data)
    loader = PromptLoader(train, cfg.data.prompts_per_step, seed=cfg.run.seed)
    return [sorted(p.prompt_id for p in loader.next_batch()) for _ in range(steps)]


def _trained_order(run_dir: Path) -> dict[int, list[str]]:
    """Step → the prompts its update trained on, the last time it ran (a rewound step runs again)."""
    records = map(json.loads, (run_dir / "data_order.jsonl").read_text().splitlines())
    return {r["step"]: r["prompts"] for r in records}


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_chaos_run_survives_a_kill_of_every_actor_kind_and_accounts_for_every_sample(tmp_path, caches):
    """A thread kills one rollout worker, one render actor, one reward replica and the trainer rank during the
    run. The run reaches total_steps with the final policy version = total_steps, trains each step on the
    prompts the loader gives it, and every drawn sample is trained on (scored, or excluded with a reason) or
    dropped by the trainer's rewind to its checkpoint (counted) or still in flight at the end (counted)."""
    run_dir = tmp_path / "runs" / "chaos"
    run_dir.parent.mkdir(parents=True)
    steps, prompts, n = 8, 2, 2
    overrides = [f"data.prompts_per_step={prompts}", f"rollout.sampling.n={n}"]
    proc = _run(run_dir, caches, f"run.total_steps={steps}", *overrides, "trainer.save_every_steps=2",
                "trainer.micro_batch_size_per_device=4", "chaos.kinds=[rollout,render,reward,trainer]",
                "chaos.first_after_s=2", "chaos.interval_s=4", "chaos.seed=1", timeout=E2E_TIMEOUT_S - 300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    faults = json.loads((run_dir / "faults.json").read_text())
    print("chaos:", json.dumps(faults, sort_keys=True))
    assert faults["chaos/kills"] == {"rollout": 1, "render": 1, "reward": 1, "trainer": 1}, faults
    # survived, each by its own mechanism
    assert faults["infra/trainer_restarts"] == 1
    assert faults["infra/rollout_replacements"] >= 1
    assert faults["infra/render_replacements"] >= 1
    assert faults["infra/reward_replacements"] >= 1
    records = _step_records(run_dir)
    assert records[-1]["train/version"] == steps and records[-1]["step"] == steps - 1
    assert _trained_order(run_dir) == dict(enumerate(_expected_order(caches, steps, *overrides)))
    last = {r["step"]: r for r in records}  # the records of the updates the final policy is made of
    for r in last.values():
        assert r["samples/scored"] + r["samples/excluded"] == r["samples/samples"] == prompts * n, r
    trained = sum(r["samples/samples"] for r in records)  # every step that ran, rewound ones included
    assert faults["samples/drawn"] == (trained + faults["infra/discarded_samples"]
                                       + faults["samples/unconsumed_at_end"]), faults


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_kill_9_of_the_driver_mid_run_then_resume_ends_at_the_same_step_and_data_order(tmp_path, caches):
    run_dir = tmp_path / "runs" / "kill9"
    run_dir.parent.mkdir(parents=True)
    steps = 5
    proc, log_path = _start(run_dir, caches, f"run.total_steps={steps}", "trainer.save_every_steps=1")
    try:
        _wait_for_step(proc, run_dir, log_path, step=1, timeout_s=900)  # step 2's update or checkpoint next
        os.killpg(proc.pid, signal.SIGKILL)  # driver, Ray and actors at once: nothing gets to clean up
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    resumed = _run(run_dir, caches, f"run.total_steps={steps}", "trainer.save_every_steps=1", "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resumed from step {latest.removeprefix('step_')}" in resumed.stderr
    assert _step_records(run_dir)[-1]["train/version"] == steps
    assert _trained_order(run_dir) == dict(enumerate(_expected_order(caches, steps)))


@pytest.mark.slow
@pytest.mark.timeout(E2E_TIMEOUT_S)
def test_a_failed_weight_sync_saves_the_trained_version_and_exits_1(tmp_path, caches, monkeypatch):
    """The engines could not take the new weights (NCCL, its store, the handshake: here a stand-in raising what
    the trainer group raises for those): the run ends with exit 1 and a checkpoint of the version it trained,
    not with a traceback. (In-process: the driver's own RolloutPool is patched.)"""
    from actors.rollout import RolloutPool
    from pipeline.config import load_config
    from pipeline.main import run
    from pipeline.rollout.weight_sync import WeightSyncError
    from pipeline.training.checkpoint import find_latest, read_meta

    real_sync = RolloutPool.sync_weights

    def sync_failing_at_version_2(self, trainer):
        if trainer.version == 2:
            raise WeightSyncError("the NCCL weight sync of version 2 failed: RuntimeError: stand-in store timeout")
        return real_sync(self, trainer)

    monkeypatch.setattr(RolloutPool, "sync_weights", sync_failing_at_version_2)
    cfg = load_config(None, ["ray.address=local", f"run.output_dir={tmp_path}", "run.name=sync-fails",
                             "run.total_steps=4", "logging.wandb.mode=disabled", "data.synth_eval_per_task=0",
                             *caches])
    assert run(cfg) == 1
    latest = find_latest(tmp_path / "sync-fails")
    assert latest is not None and read_meta(latest)["step"] == 2, latest
