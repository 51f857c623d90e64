"""Reward throughput on the tiny reward model: samples/s for micro-batch sizes 1..32 and 1..2 replicas.

    python benchmarks/reward.py [--samples 64] [--batch-sizes 1 2 4 8 16 32] [--replicas 1 2] [--json OUT]

Each replica is a Ray actor with one CPU running HF generate + xgrammar (tiny random Qwen3-VL, the tiny
answer limits of `pipeline.critic.testing`); B is the replica's micro-batch (`reward.batching.max_batch`,
also the HF generate batch). Requests are sent one sample each, all at once, so the replicas' batchers fill.
Timings exclude replica start-up; the first call of each configuration is a warm-up and not counted; the
best of `--repeats` timed runs is reported (the box is shared: other jobs' load only ever slows a run down).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from actors.reward import RewardPool
from pipeline.critic.testing import random_samples, tiny_reward_config
from pipeline.models.config import ModelsConfig
from pipeline.tiny import ensure_models


def run(batch_size: int, replicas: int, n: int, models: ModelsConfig, repeats: int) -> dict:
    cfg = tiny_reward_config(
        actors={"replicas": replicas, "num_cpus": 1, "request_timeout_s": 600},
        batching={"max_batch": batch_size, "max_wait_ms": 50, "chunk_size": 1},
        hf={"max_batch_size": batch_size, "num_threads": 1},
    )
    pool = RewardPool(cfg, models, start_timeout_s=300)
    try:
        pool.score(random_samples(max(2, replicas * batch_size), seed=99), timeout_s=600)  # warm-up
        rates, invalid, failed = [], 0, 0
        for rep in range(repeats):
            samples = random_samples(n, seed=7 + rep)
            t0 = time.perf_counter()
            stats = pool.score(samples, timeout_s=600)
            rates.append(n / (time.perf_counter() - t0))
            invalid += stats["invalid_judgements"]
            failed += stats["failed"]
        batches = [b for r in pool.stats() for b in r["batches"]]
    finally:
        pool.shutdown()
    return {"batch_size": batch_size, "replicas": replicas, "samples": n, "repeats": repeats,
            "samples_per_s": max(rates), "all_samples_per_s": rates, "invalid_judgements": invalid,
            "failed": failed, "mean_batch": sum(batches) / max(1, len(batches))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per configuration; the best is reported")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    cache = os.environ.get("REWARD_BENCH_CACHE") or tempfile.mkdtemp(prefix="reward-bench-")
    models = ensure_models(ModelsConfig(cache_dir=cache), policy=False)
    ray.init(address="local", num_cpus=max(args.replicas), include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for b in args.batch_sizes:
            for r in args.replicas:
                row = run(b, r, args.samples, models, args.repeats)
                rows.append(row)
                print(f"B={b:>2} replicas={r}: {row['samples_per_s']:6.2f} samples/s "
                      f"(mean batch {row['mean_batch']:.1f}, invalid {row['invalid_judgements']})", flush=True)
    finally:
        ray.shutdown()
    print(f"\nsamples/s (tiny RM, CPU, 1 CPU per replica, best of {args.repeats} x {args.samples} samples)")
    print("  B   " + "".join(f"{f'{r} replica' + ('s' if r > 1 else ''):>12}" for r in args.replicas))
    for b in args.batch_sizes:
        cells = [next(x for x in rows if x["batch_size"] == b and x["replicas"] == r) for r in args.replicas]
        print(f"{b:>3}   " + "".join(f"{c['samples_per_s']:12.2f}" for c in cells))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
