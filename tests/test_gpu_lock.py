"""The production environment resolves: the `gpu` extra, resolved for linux x86_64 by uv from the registry's
metadata (seconds, no wheel installed) with the lock's own pins as preferences, is exactly
requirements-gpu.lock, and shares torch and transformers with the CPU lock. Preferences, not "what the registry
gives today": a lock is a solution frozen in time, and a new release of some transitive package (peft, loguru)
must not fail CI; a pyproject change that the locked pins no longer satisfy must. A pin that has no solution (vLLM 0.33 needs transformers >=5.16.1, verl 0.9.1 <5.11) fails
here, not in a GPU user's first `pip install`.

Needs the package registry; where it cannot be reached the tests skip and say so (a resolution error fails).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GPU_LOCK = REPO / "requirements-gpu.lock"
CPU_LOCK = REPO / "requirements-cpu.lock"
PLATFORM = ["--python-platform", "x86_64-manylinux_2_28", "--python-version", "3.11"]
# uv's words for a registry it could not reach (as opposed to a resolution without a solution).
NETWORK_ERRORS = ("Failed to fetch", "error sending request", "dns error", "Connection refused", "timed out",
                  "Could not connect", "network")


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (it comes with the dev extra: ./setup.sh)")
    return found


def resolve(pyproject: Path, preferences: str | None = None) -> subprocess.CompletedProcess:
    """Resolve the gpu extra; with `preferences` (a lock's text) uv keeps every pin that still fits, as it does
    when regenerating a lock in place with `-o`. The answer is returned in stdout either way."""
    out = pyproject.parent / ".gpu-lock-check.txt"
    out.write_text(preferences or "")
    try:
        proc = subprocess.run([_uv(), "pip", "compile", str(pyproject), "--extra", "gpu", *PLATFORM, "--no-header",
                               "--no-annotate", "--quiet", "-o", str(out)], capture_output=True, text=True,
                              timeout=300, cwd=pyproject.parent)
        proc.stdout = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    if proc.returncode != 0 and any(w in proc.stderr for w in NETWORK_ERRORS) and "No solution" not in proc.stderr:
        pytest.skip(f"the package registry cannot be reached: {proc.stderr.strip()[-300:]}")
    return proc


def pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return out


def stale_pins(pyproject: Path, lock_text: str) -> dict[str, tuple]:
    proc = resolve(pyproject, preferences=lock_text)
    assert proc.returncode == 0, f"the gpu extra has no solution:\n{proc.stderr}"
    resolved, locked = pins(proc.stdout), pins(lock_text)
    return {k: (locked.get(k), resolved.get(k)) for k in set(resolved) | set(locked) if locked.get(k) != resolved.get(k)}


def test_the_gpu_lock_is_a_solution_of_pyproject():
    stale = stale_pins(REPO / "pyproject.toml", GPU_LOCK.read_text())
    assert not stale, ("requirements-gpu.lock is stale (package: locked → resolved); regenerate it with the command "
                       f"in its header:\n{stale}")


def test_a_lock_missing_a_package_is_stale():
    """The check can fail: a lock without one of the packages the extra needs is caught."""
    lock = "\n".join(line for line in GPU_LOCK.read_text().splitlines() if not line.startswith("peft=="))
    assert stale_pins(REPO / "pyproject.toml", lock).get("peft", (0,))[0] is None


def test_gpu_and_cpu_environments_share_torch_and_transformers():
    gpu, cpu = pins(GPU_LOCK.read_text()), pins(CPU_LOCK.read_text())
    # (xgrammar differs: vLLM 0.31 pins 0.2.7, the CPU lock has 0.2.8; the answer schema avoids the construct
    # 0.2.8 mis-compiles, pipeline/critic/schema.py, so both take the same grammar.)
    for name in ("torch", "transformers", "verl", "ray", "deepspeed"):
        assert gpu[name].split("+")[0] == cpu[name].split("+")[0], (name, gpu[name], cpu[name])
    assert gpu["vllm"].startswith("0.31."), gpu["vllm"]


def test_a_pin_without_a_solution_fails(tmp_path):
    """The check can fail: the vLLM pin this project had before (0.33) conflicts with verl's transformers."""
    text = (REPO / "pyproject.toml").read_text()
    old = re.sub(r'"vllm>=[^"]*"', '"vllm>=0.33.0,<0.34"', text)
    assert old != text
    (tmp_path / "pyproject.toml").write_text(old)
    (tmp_path / "README.md").write_text("")
    proc = resolve(tmp_path / "pyproject.toml")
    assert proc.returncode != 0 and "No solution found" in proc.stderr, proc.stderr
    assert "transformers" in proc.stderr
