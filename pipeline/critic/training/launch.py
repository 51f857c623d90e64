"""Critic SFT on this machine without Ray: `train_local(cfg)` runs one rank in a fresh Python process.

A fresh process (`python -c`, not a fork), so the caller never holds a torch.distributed process group or
DeepSpeed's global state (the driver goes on to start Ray; a test goes on to load the result), nothing of the
caller's main module is re-imported, and a hung run is killed at `cfg.timeout_s` with its whole process
group (wandb's service included) without taking the caller down. Used to build the embedded default's tiny
critic and by tests; `actors/critic_trainer.py: train_on_ray` is the multi-rank path.
"""

from __future__ import annotations

import codecs
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from pipeline.critic.training.config import CriticTrainConfig
from pipeline.distributed import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]


class CriticTrainingError(RuntimeError):
    """The training process failed in a way that could not be sent back as its own exception."""


def _child_main(cfg_path: str, result_path: str, port: str) -> None:
    """In the training process: run rank 0 of 1, pickle ("ok", summary) or ("error", exception, traceback)."""
    from pipeline.critic.training.sft import train_rank  # heavy: pulls in pyarrow, tokenizers

    try:
        cfg = CriticTrainConfig.model_validate_json(Path(cfg_path).read_text())
        result: tuple = ("ok", train_rank(cfg, 0, 1, "127.0.0.1", int(port)))
    except BaseException as e:  # sent back whole when it pickles (CriticDataError, ValueError, ...)
        result = ("error", e, traceback.format_exc())
    try:
        data = pickle.dumps(result)
    except Exception:
        data = pickle.dumps(("error", CriticTrainingError(f"{type(result[1]).__name__}: {result[1]}"), result[2]))
    Path(result_path).write_bytes(data)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already empty
        pass
    proc.wait()


def _forward(pipe) -> None:
    """Copy a child's output to our stderr as it comes, one read (≈ one write of the child's) at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while chunk := os.read(pipe.fileno(), 65536):
            sys.stderr.write(decoder.decode(chunk))
            sys.stderr.flush()
    except (OSError, ValueError):  # our stderr closed under us: nothing left to show it on
        pass
    finally:
        pipe.close()


def train_local(cfg: CriticTrainConfig) -> dict[str, Any]:
    """Train on 1 rank in a subprocess; returns train_rank's summary or re-raises its exception. Raises
    TimeoutError (after killing the process group) when it runs past `cfg.timeout_s`."""

    if cfg.ranks != 1:
        raise ValueError(f"train_local runs 1 rank (ranks={cfg.ranks}); use actors.critic_trainer.train_on_ray")
    with tempfile.TemporaryDirectory(prefix="critic-sft-") as tmp:
        cfg_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.pkl"
        cfg_path.write_text(cfg.model_dump_json())
        code = "import sys; from pipeline.critic.training.launch import _child_main; _child_main(*sys.argv[1:])"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        # Its output goes through this process's stderr (the driver's console policy: without a terminal a
        # progress redraw becomes a line of its own, instead of all of them glued into one line of the log).
        proc = subprocess.Popen([sys.executable, "-c", code, str(cfg_path), str(result_path), str(free_port())],
                                env=env, start_new_session=True,  # its own process group, killed as one
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pump = threading.Thread(target=_forward, args=(proc.stdout,), name="critic-sft-output", daemon=True)
        pump.start()
        try:
            proc.wait(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"critic SFT did not finish within timeout_s={cfg.timeout_s:g} s") from None
        finally:  # also on success: nothing it started (wandb's service) outlives it
            _kill_group(proc)
            pump.join(timeout=10)  # the pipe ends once the whole group is gone
        if not result_path.is_file():
            raise CriticTrainingError(f"the critic SFT process died (exit code {proc.returncode})")
        status, *payload = pickle.loads(result_path.read_bytes())
    if status == "error":
        error, detail = payload
        raise error from CriticTrainingError(f"in the training process:\n{detail}")
    return payload[0]
