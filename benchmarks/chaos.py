"""Fault tolerance under injected actor deaths: the same run with and without a chaos thread.

    .venv/bin/python benchmarks/chaos.py [--steps 8] [--kinds rollout,render,reward,trainer] [key.path=value ...]

Runs `pipeline/main.py` twice, same seed and config (embedded default, tiny models from the usual caches):
fault-free, then with `chaos.kinds=...` (actors/chaos.py kills one actor of each kind during the run). Reads
each run's metrics.jsonl, data_order.jsonl and faults.json and prints:

  faults injected   kills per actor kind (the chaos thread's own record)
  survived          replacements / restarts / resends each pool and the driver report
  samples           drawn, trained (scored + excluded), excluded by reason, discarded by the trainer's rewind,
                    in flight at the end, and the unexplained rest (must be 0)
  outcome           final policy version (must equal --steps), the same data order as the fault-free run
  overhead          wall time of the chaos run / the fault-free run (one pair of runs: noisy on a shared box)

Exit status 1 when an invariant fails (unexplained samples, wrong final version, another data order).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.runlog.layout import RunLayout  # noqa: E402


def _run(run_dir: Path, overrides: list[str], timeout_s: float) -> float:
    cmd = [sys.executable, str(REPO / "pipeline" / "main.py"), "ray.address=local", f"run.output_dir={run_dir.parent}",
           f"run.name={run_dir.name}", "logging.wandb.mode=disabled", "data.synth_eval_per_task=0", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ, RAY_ADDRESS=""))
    if proc.returncode != 0:
        sys.exit(f"{run_dir.name} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def _records(run_dir: Path) -> list[dict]:
    lines = RunLayout(run_dir).metrics.read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/version" in r]


def _order(run_dir: Path) -> dict[int, list[str]]:
    return {r["step"]: r["prompts"] for r in map(json.loads, RunLayout(run_dir).data_order.read_text().splitlines())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--kinds", default="rollout,render,reward,trainer")
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    common = [f"run.total_steps={args.steps}", "trainer.save_every_steps=2", *args.overrides]
    chaos = [f"chaos.kinds=[{args.kinds}]", "chaos.first_after_s=2", "chaos.interval_s=4"]
    with tempfile.TemporaryDirectory(prefix="chaos-bench-") as tmp:
        clean_dir, chaos_dir = Path(tmp) / "fault-free", Path(tmp) / "chaos"
        clean_s = _run(clean_dir, common, args.timeout_s)
        chaos_s = _run(chaos_dir, common + chaos, args.timeout_s)
        faults = json.loads(RunLayout(chaos_dir).faults.read_text())
        records = _records(chaos_dir)
        excluded = Counter()
        for r in records:
            excluded.update({k.removeprefix("samples/excluded/"): v for k, v in r.items()
                             if k.startswith("samples/excluded/")})
        trained = sum(r["samples/samples"] for r in records)
        unexplained = faults["samples/drawn"] - trained - faults["infra/discarded_samples"] \
            - faults["samples/unconsumed_at_end"]
        unscored = sum(r["samples/samples"] - r["samples/scored"] - r["samples/excluded"] for r in records)
        same_order = _order(chaos_dir) == _order(clean_dir)
        version = records[-1]["train/version"]

    print(f"faults injected : {faults['chaos/kills']}")
    print("survived        : " + ", ".join(f"{k.removeprefix('infra/')}={v}" for k, v in faults.items()
                                           if k.startswith("infra/")))
    print(f"samples         : drawn {faults['samples/drawn']}, trained {trained} (excluded {sum(excluded.values())}: "
          f"{dict(excluded) or 'none'}), discarded by rewind {faults['infra/discarded_samples']}, in flight at end "
          f"{faults['samples/unconsumed_at_end']}, unexplained {unexplained}, neither scored nor excluded {unscored}")
    print(f"outcome         : final policy version {version:g} of {args.steps}; data order "
          f"{'the same as' if same_order else 'DIFFERENT from'} the fault-free run")
    print(f"overhead        : {chaos_s:.0f} s with faults / {clean_s:.0f} s without = {chaos_s / clean_s:.2f}x")
    ok = unexplained == 0 and unscored == 0 and version == args.steps and same_order
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
