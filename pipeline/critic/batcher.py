"""Micro-batching for a reward replica: requests arrive concurrently, the model runs on up to B items at once.

`submit(items)` (a coroutine; many may be pending) puts its items in the queue; a worker takes up to
`max_batch` items as soon as that many wait, or when the oldest has waited `max_wait_s`, runs `fn(items)` in
a thread (the event loop stays free for health checks and new requests), and hands each caller exactly its
own results, matched by position — `fn` must return one result per item, in order. If `fn` raises, every
caller in that batch gets the exception (the pool then retries elsewhere).

`concurrency` batches run at once. 1 suits an engine that serves one call at a time (HF generate, vLLM's
offline `LLM`): the next batch forms while this one runs. An engine with continuous batching (vLLM's
`AsyncLLM`, an OpenAI-compatible server) wants several: each batch's requests go to the engine as soon as the
batch forms, and the engine fills its sequence slots from all of them instead of idling behind the slowest
answer of one batch (benchmarks/reward_engine.py measures the difference).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int, max_wait_s: float,
                 executor: concurrent.futures.Executor | None = None, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(concurrency,
                                                                          thread_name_prefix="reward-batch")
        self._queue: list[tuple[Any, asyncio.Future, float]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes of the batches run, for stats and tests
        self.running = 0  # items in the batches running now
        self.peak_batches_running = 0
        self._batches_running = 0
        self._tasks: set[asyncio.Task] = set()  # running batches (a task nobody references may be collected)

    @property
    def pending(self) -> int:
        return len(self._queue) + self.running

    async def submit(self, items: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run())
        now = time.monotonic()
        futures = []
        for item in items:
            fut = loop.create_future()
            self._queue.append((item, fut, now))
            futures.append(fut)
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            # A slot first, then the batch: with one slot the next batch forms while this one runs, and is cut
            # when the slot frees, as full as the queue allows by then.
            await slots.acquire()
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._queue[0][2] + self.max_wait_s
            while len(self._queue) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            batch = [b for b in batch if not b[1].cancelled()]
            if not batch:
                slots.release()
                continue
            self.running += len(batch)
            self._batches_running += 1
            self.peak_batches_running = max(self.peak_batches_running, self._batches_running)
            self.batches.append(len(batch))
            task = asyncio.get_running_loop().create_task(self._execute(batch, slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.fn, [b[0] for b in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as e:  # noqa: BLE001 — handed to every caller of this batch
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(e)
        else:
            for (_, fut, _), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
        finally:
            self.running -= len(batch)
            self._batches_running -= 1
            slots.release()
