"""Does a reward replica keep its engine full? Batch-at-a-time vs continuous submission, with a stand-in engine.

A vLLM engine has a fixed number of sequence slots (`max_num_seqs`) and decodes every running sequence at
once; a sequence holds its slot until its answer is done, so answers of different lengths finish at different
times and a slot that frees can take a new request at once (continuous batching). A replica that sends one
micro-batch and waits for all of it leaves the slots of the short answers idle until the longest is done.

The stand-in engine (no GPU, no model): `slots` concurrent sequences, each answer's length drawn from a
log-normal like Visual-ERM's (median ~600 tokens, capped at the task's limit: 4,096 for charts/SVG), decoded at
a fixed per-sequence rate, time scaled down. The replica side is the real `MicroBatcher` (pipeline/critic/
batcher.py), fed in chunks as the reward pool feeds it. Printed: judgements/s and engine occupancy (busy
slot-seconds / (slots × wall)) for concurrency 1, for the batches that just fill the slots (ceil(slots /
max_batch)) and for the automatic value (twice that: `RewardConfig.batch_concurrency`), and the ratio of the
automatic value to batch-at-a-time, measured in one run.

    .venv/bin/python benchmarks/reward_engine.py [--requests 512] [--slots 64] [--max-batch 16]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.critic.batcher import MicroBatcher  # noqa: E402


class StandInEngine:
    """Continuous batching with `slots` sequence slots, on its own event loop thread (as vLLM's AsyncLLM runs
    in the vLLM backend)."""

    def __init__(self, slots: int, seconds_per_token: float):
        self.slots, self.seconds_per_token = slots, seconds_per_token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.semaphore = asyncio.run_coroutine_threadsafe(self._make(), self.loop).result()
        self.busy_s = 0.0

    async def _make(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.slots)

    async def _one(self, tokens: int) -> int:
        async with self.semaphore:
            t0 = time.perf_counter()
            await asyncio.sleep(tokens * self.seconds_per_token)
            self.busy_s += time.perf_counter() - t0
        return tokens

    def generate(self, lengths: list[int]) -> list[int]:
        """One backend call: every request of the batch submitted at once, the call returns when all are done."""
        async def all_of():
            return list(await asyncio.gather(*(self._one(n) for n in lengths)))
        return asyncio.run_coroutine_threadsafe(all_of(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def answer_lengths(n: int, seed: int, median: int = 600, cap: int = 4096) -> list[int]:
    rng = random.Random(seed)
    return [min(cap, max(16, int(rng.lognormvariate(math.log(median), 0.8)))) for _ in range(n)]


def measure(lengths: list[int], slots: int, max_batch: int, concurrency: int, chunk: int,
            seconds_per_token: float) -> dict[str, float]:
    engine = StandInEngine(slots, seconds_per_token)

    async def feed():
        batcher = MicroBatcher(engine.generate, max_batch, max_wait_s=0.005, concurrency=concurrency)
        t0 = time.perf_counter()
        chunks = [lengths[i:i + chunk] for i in range(0, len(lengths), chunk)]
        out = await asyncio.gather(*(batcher.submit(c) for c in chunks))
        return time.perf_counter() - t0, out

    try:
        wall, out = asyncio.run(feed())
    finally:
        engine.close()
    assert [n for c in out for n in c] == lengths  # every caller got its own answers
    return {"concurrency": concurrency, "wall_s": wall, "judgements_per_s": len(lengths) / wall,
            "occupancy": engine.busy_s / (slots * wall)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--slots", type=int, default=64, help="the engine's max_num_seqs")
    ap.add_argument("--max-batch", type=int, default=16, help="reward.batching.max_batch")
    ap.add_argument("--chunk", type=int, default=4, help="reward.batching.chunk_size")
    ap.add_argument("--seconds-per-token", type=float, default=2e-5, help="time scale (a real engine: ~2e-2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    lengths = answer_lengths(args.requests, args.seed)
    fill = -(-args.slots // args.max_batch)
    rows = [measure(lengths, args.slots, args.max_batch, c, args.chunk, args.seconds_per_token)
            for c in (1, fill, 2 * fill)]
    print(f"{args.requests} judgements, answer tokens median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}; "
          f"engine {args.slots} slots; micro-batch {args.max_batch}")
    print(f"{'submission':<28} {'concurrency':>11} {'judgements/s':>13} {'occupancy':>10} {'wall s':>8}")
    for name, r in zip(("batch at a time", "continuous, slots' worth", "continuous (auto, 2x)"), rows):
        print(f"{name:<28} {r['concurrency']:>11} {r['judgements_per_s']:>13.1f} {r['occupancy']:>10.2f} "
              f"{r['wall_s']:>8.2f}")
    print(f"continuous (auto) / batch-at-a-time: {rows[2]['judgements_per_s'] / rows[0]['judgements_per_s']:.2f}x "
          f"judgements/s, occupancy {rows[0]['occupancy']:.2f} → {rows[2]['occupancy']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
