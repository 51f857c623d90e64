"""The driver end to end as a user runs it: `python pipeline/main.py ...` and `ray job submit -- ...`."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from tests.test_report import check_embedded_default_dashboard

MAIN = str(REPO_ROOT / "pipeline" / "main.py")
PYTHON = sys.executable


def _run_main(args, tmp_path, timeout=420):
    env = dict(os.environ, RAY_ADDRESS="")  # never join a cluster some other process left running
    return subprocess.run(
        [PYTHON, MAIN, "ray.address=local", f"run.output_dir={tmp_path / 'runs'}",
         f"models.cache_dir={tmp_path / 'models'}", f"data.cache_dir={tmp_path / 'data'}", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env,
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # from nothing (policy warm start, 2 steps; the oracle critic needs no model)
def test_embedded_default_runs_and_logs_offline_to_wandb(tmp_path):
    # From nothing: the tiny policy's warm start is built first (the default's critic is the oracle). (A table
    # every step, so the same run also checks the dashboard: tests/test_report.py.)
    proc = _run_main(["run.total_steps=2", "run.name=smoke", "logging.wandb.table_every_steps=1"], tmp_path,
                     timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 1 " in proc.stderr
    # Without a terminal every progress bar is a line every few seconds, not one per tick: from nothing this
    # run printed 407 lines when the warm start's loss display forced a line per step (310 of them); 126 since.
    lines = proc.stderr.splitlines()
    assert len(lines) < 200, "\n".join(lines[:60])
    check_embedded_default_dashboard(proc, tmp_path / "runs" / "smoke", tmp_path)
    wandb_dir = tmp_path / "runs" / "smoke" / "wandb"
    runs = list(wandb_dir.glob("offline-run-*"))
    assert len(runs) == 1, list(wandb_dir.iterdir())
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1, "no offline wandb log written"
    # wandb 0.31 keeps config and history only in this binary log (protobuf records; strings stored raw):
    # the run's config, the git commit and the step metrics must all be in it.
    data = logs[0].read_bytes()
    for key in (b"total_steps", b"git_commit", b"train/loss", b"samples/reward/mean", b"perf/rollout_busy_s",
                b"eval/reward"):
        assert key in data, key
    # The run checkpointed at its last step; resuming continues from there instead of starting over.
    assert (tmp_path / "runs" / "smoke" / "checkpoints" / "latest").exists()
    resumed = _run_main(["run.total_steps=3", "run.name=smoke", "trainer.resume=true",
                         "logging.wandb.mode=disabled"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stderr
    assert "step 2 " in resumed.stderr and "step 0 " not in resumed.stderr


def test_unsatisfiable_request_fails_fast_naming_the_resource(tmp_path):
    t0 = time.monotonic()
    proc = _run_main(["rollout.num_gpus=1", "logging.wandb.mode=disabled"], tmp_path, timeout=180)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "rollout: one replica asks for 1 GPU" in proc.stderr
    assert time.monotonic() - t0 < 170


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_main_on_a_started_head(tmp_path, run_caches):
    """README's cluster recipe: RAY_AUTH_MODE=token for both `ray start --head` and `ray job submit`."""
    venv_bin = Path(PYTHON).parent
    ray_cli = venv_bin / "ray"
    assert ray_cli.exists(), "ray CLI not next to the test interpreter"
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{venv_bin}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60)
    gcs_port, dash_port = _free_port(), _free_port()
    temp_dir = Path("/tmp") / f"ray-jobtest-{os.getpid()}"  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs_port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port), "--temp-dir", str(temp_dir),
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        address = f"http://127.0.0.1:{dash_port}"
        deadline = time.monotonic() + 90
        while True:  # the dashboard's job API comes up a few seconds after the GCS
            probe = subprocess.run([str(ray_cli), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stderr[-2000:]
            time.sleep(2)
        job = subprocess.run(
            [str(ray_cli), "job", "submit", "--address", address, "--working-dir", str(REPO_ROOT),
             "--", "python", "pipeline/main.py", "run.total_steps=1", "logging.wandb.mode=disabled",
             *run_caches, f"run.output_dir={tmp_path / 'runs'}"],
            env=env, capture_output=True, text=True, timeout=420,
        )
        out = job.stdout + job.stderr
        assert job.returncode == 0, out[-4000:]
        assert "succeeded" in out and "step 0 " in out
        # Without the auth mode the same client is refused: the README's warning is real.
        refused = subprocess.run([str(ray_cli), "job", "list", "--address", address],
                                 env={k: v for k, v in env.items() if k != "RAY_AUTH_MODE"},
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "authentication token" in (refused.stdout + refused.stderr)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` tears its cluster down on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_print_config_prints_the_resolved_config_and_exits_0(capsys):
    import yaml

    from pipeline.main import main

    assert main(["--print-config", "run.total_steps=7", "chaos.kinds=[render]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["total_steps"] == 7 and printed["chaos"]["kinds"] == ["render"]
    assert printed["rollout"]["max_replacements"] == 4  # defaults appear too, not only what the YAML sets
    assert main(["--print-config", "run.no_such_key=1"]) == 2
