"""Checkpoint layout and the commit protocol that makes a crash mid-save harmless (pure logic, no Ray).

Layout of a run directory:

    <run_dir>/checkpoints/
        step_2/                         one complete checkpoint (N = policy updates done)
            meta.json                   step, policy version, world size, run config, the driver's `extra`
                                        (dataloader position, ...); written last inside the directory
            policy/                     verl's FSDP checkpoint (`engine.save_checkpoint`), one file per rank:
                model_world_size_W_rank_R.pt        the rank's FSDP2 parameter shards (DTensor state dict)
                optim_world_size_W_rank_R.pt        the rank's AdamW state shards (moments, step)
                extra_state_world_size_W_rank_R.pt  lr-scheduler state + the rank's RNG states
                                                    (torch CPU, numpy, python random, and the GPU's)
                huggingface/                         model config + processor (rank 0)
        step_4/ ...
        latest                          text file naming the newest complete checkpoint ("step_4")
        .step_6.partial-<id>/           a save in progress (or one that crashed): never read

Commit protocol (`begin_save` → ranks write → `commit`):
  1. every save writes into a fresh hidden staging directory;
  2. `commit` writes meta.json into it, renames it to step_<N> (atomic on one filesystem),
  3. then replaces `latest` atomically (write a temp file, fsync, os.replace).
A crash before 3 leaves `latest` naming the previous complete checkpoint; a crash between 2 and 3 leaves an
unreferenced step_<N> that the next save of that step replaces. `find_latest` only follows `latest`.

Resume must use the same number of trainer ranks: verl's files are per-rank shards (`meta.json` records the
world size and loading checks it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.runlog.layout import RunLayout

CHECKPOINTS_DIR = RunLayout(Path(".")).checkpoints.name
LATEST_FILE = "latest"
META_FILE = "meta.json"
POLICY_DIR = "policy"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
_PARTIAL_PREFIX = ".step_"
_PARTIAL_MARK = ".partial-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not fit the trainer that wants to load it."""


def checkpoints_root(run_dir: str | Path) -> Path:
    return RunLayout(Path(run_dir)).checkpoints


def step_dir(run_dir: str | Path, step: int) -> Path:
    return checkpoints_root(run_dir) / f"step_{int(step)}"


def is_complete(path: str | Path) -> bool:
    """A checkpoint directory is complete when its meta.json exists (commit writes it last)."""
    return (Path(path) / META_FILE).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {META_FILE})")
    return json.loads(meta_path.read_text())


def begin_save(run_dir: str | Path, step: int) -> Path:
    """A fresh staging directory for a checkpoint of `step`; the ranks write their files under it.

    Staging directories of earlier saves that never committed (a crash) are removed first.
    """
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_saves(run_dir)
    staging = root / f"{_PARTIAL_PREFIX}{int(step)}{_PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def commit(run_dir: str | Path, staging: str | Path, step: int, meta: dict[str, Any]) -> Path:
    """Seal a staged checkpoint: meta.json, rename to step_<N>, then point `latest` at it. Returns step_<N>.

    Refuses to replace the checkpoint `latest` already names (saving one step twice is a driver bug, and
    replacing it in place would open a window in which `latest` names nothing).
    """
    staging, target = Path(staging), step_dir(run_dir, step)
    if not staging.is_dir():
        raise CheckpointError(f"staging directory {staging} does not exist")
    meta = {"format_version": FORMAT_VERSION, "step": int(step), "saved_at": time.time(), **meta}
    _atomic_write_text(staging / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str))
    _fsync_tree(staging)
    if target.exists():
        if _latest_name(run_dir) == target.name:
            raise CheckpointError(f"{target} is the latest checkpoint already; refusing to overwrite it")
        shutil.rmtree(target)  # left by a crash between rename and pointer update: never referenced
    os.rename(staging, target)
    _fsync_dir(target.parent)
    _atomic_write_text(checkpoints_root(run_dir) / LATEST_FILE, target.name + "\n")
    return target


def find_latest(run_dir: str | Path) -> Path | None:
    """The checkpoint `latest` names, or None when the run has none. Never guesses from directory names."""
    name = _latest_name(run_dir)
    if name is None:
        return None
    path = checkpoints_root(run_dir) / name
    if not is_complete(path):  # cannot happen through `commit`; someone deleted or edited files
        raise CheckpointError(
            f"{checkpoints_root(run_dir) / LATEST_FILE} names {name}, which is not complete"
        )
    return path


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (never the one `latest` names). Returns deleted."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    latest = _latest_name(run_dir)
    deleted = []
    for _step, path in list_checkpoints(run_dir)[:-keep]:
        if path.name != latest:
            shutil.rmtree(path)
            deleted.append(path)
    return deleted


def remove_partial_saves(run_dir: str | Path) -> list[Path]:
    root = checkpoints_root(run_dir)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_PARTIAL_PREFIX) and _PARTIAL_MARK in child.name:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


# ---------------------------------------------------------------------------------------------------------
# Filesystem helpers
# ---------------------------------------------------------------------------------------------------------
def _latest_name(run_dir: str | Path) -> str | None:
    pointer = checkpoints_root(run_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not _STEP_DIR.match(name):
        raise CheckpointError(f"{pointer} holds {name!r}, not a checkpoint name like 'step_4'")
    return name


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file the ranks wrote before the rename makes the checkpoint visible."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


__all__ = [
    "CHECKPOINTS_DIR",
    "LATEST_FILE",
    "META_FILE",
    "POLICY_DIR",
    "CheckpointError",
    "begin_save",
    "checkpoints_root",
    "commit",
    "find_latest",
    "is_complete",
    "list_checkpoints",
    "prune",
    "read_meta",
    "remove_partial_saves",
    "step_dir",
]
