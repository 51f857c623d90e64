"""benchmarks/gpu_smoke.py runs its steps (HF rollout, HF critic, verl GRPO updates, DeepSpeed critic SFT) on CPU
here; on a GPU machine the same script runs them on CUDA in bf16 (no GPU is needed for this test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_smoke_script_runs_every_step_on_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py"), "--device", "cpu",
                           "--updates", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["build tiny models", "HF rollout", "HF critic", "verl FSDP2 GRPO", "DeepSpeed critic SFT"]
    assert all(s["ok"] for s in steps.values()), steps
    assert "2 GRPO updates" in steps["verl FSDP2 GRPO"]["detail"] and "all valid" in steps["HF critic"]["detail"]
