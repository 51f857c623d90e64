"""cluster/check_image.py, the check a user runs inside the built image, and the Dockerfile's CUDA pairing.

Only the render check can run on these CPU machines; the others need the image's GPU packages and a GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cluster" / "check_image.py"), *args], capture_output=True,
                          text=True, timeout=180, cwd=REPO)


def test_the_render_check_renders_every_kind():
    proc = _run("--checks", "render")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("render"))
    assert " yes " in row and all(kind in row for kind in ("chart", "table", "svg")), row


def test_an_unknown_check_is_refused_by_name():
    proc = _run("--checks", "render,warp-drive")
    assert proc.returncode == 2 and "warp-drive" in proc.stderr


def test_flash_attn_is_built_with_the_cuda_major_of_the_locked_torch():
    """torch's extension build refuses an nvcc of another CUDA major than the torch wheel's."""
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    devel = re.search(r"ARG CUDA_DEVEL_IMAGE=nvidia/cuda:(\d+)\.", dockerfile).group(1)
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.", (REPO / "requirements-gpu.lock").read_text(), re.M).group(1)
    assert devel == runtime, f"flash-attn builder CUDA {devel}.x, locked torch's CUDA runtime {runtime}.x"
