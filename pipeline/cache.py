"""Build-once cache directories shared by concurrent processes (tiny models, synthetic datasets)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """`target` if `complete(target)`; else `build(scratch)` in a scratch directory beside it, renamed into
    place. Several processes (actors, runs) may build the same entry at once: none ever sees a half-written
    directory, and when two finish, the loser's identical copy is discarded."""
    target = Path(target)
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another process won the race; its copy is identical
            if not complete(target):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
