"""The streaming scheduler: prompts → rollout → render → reward → complete GRPO groups, overlapped with training.

Each stage runs in its own thread and hands work to the next through a bounded queue, so rendering starts as
soon as the first responses exist and scoring as soon as the first renderings do, while the trainer works on the
previous batch. Rollouts run ahead of the trainer by at most `max_staleness` policy versions (0 = the
synchronous loop). The stages are plain callables, so this module knows nothing of Ray: the driver passes in
functions that call the actor pools, the tests pass in fakes.

Accounting rule: every sample that leaves a rollout comes back out of `next_batch`, scored or with a failure
reward; a stage that raises stops the whole run with that error instead of losing samples.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

from pipeline.loop.groups import GroupAssembler
from pipeline.sample import Sample

RolloutFn = Callable[[list[Sample]], list[Sample]]  # prompts → n responses each
StageFn = Callable[[list[Sample]], list[Sample]]  # fills fields in place / returns the same samples

_STOP = object()


@dataclass
class _Work:
    step: int  # the rollout step the samples belong to (= the training step that will consume them)
    samples: list[Sample]


@dataclass
class StageStats:
    busy_s: float = 0.0
    items: int = 0


@dataclass
class StreamStats:
    stages: dict[str, StageStats] = field(default_factory=lambda: defaultdict(StageStats))
    queue_depth: dict[str, int] = field(default_factory=dict)


class StreamError(RuntimeError):
    """A stage failed; the run stops (samples in flight are reported, not silently dropped)."""


class StreamInterrupted(Exception):
    """`interrupt()` was called (the driver got SIGINT / SIGTERM) while the trainer waited for a batch."""


class StreamingScheduler:
    def __init__(
        self,
        next_prompts: Callable[[], list[Sample]],
        rollout_fns: list[RolloutFn],
        stages: list[tuple[str, StageFn, int]],  # (name, function, threads running it concurrently)
        group_size: int,
        max_staleness: int,
        chunk_size: int = 4,
        queue_size: int = 8,
        poll_s: float = 0.2,
    ):
        if max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        self.next_prompts = next_prompts
        self.group_size = group_size
        self.max_staleness = max_staleness
        self.chunk_size = chunk_size
        self.poll_s = poll_s
        self.stats = StreamStats()
        self._trained = 0  # updates finished by the trainer (the policy version rollouts may use)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._interrupted = threading.Event()
        self._error: Optional[BaseException] = None
        self._assembler = GroupAssembler()
        self._groups_of_step: dict[int, set[str]] = {}
        self._complete: dict[int, list[list[Sample]]] = defaultdict(list)
        self._lock = threading.Lock()

        # queues between stages: rollout work (per worker, shared), then one per processing stage, then done
        self._rollout_q: queue.Queue = queue.Queue(maxsize=max(1, len(rollout_fns)))
        self._stage_qs = [queue.Queue(maxsize=queue_size) for _ in stages]
        self._done_q: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._produce, name="prompts", daemon=True)]
        for i, fn in enumerate(rollout_fns):
            self._threads.append(threading.Thread(target=self._rollout_loop, args=(fn,), name=f"rollout-{i}",
                                                  daemon=True))
        self._stage_names = [name for name, _, _ in stages]
        for i, (name, fn, threads) in enumerate(stages):
            out = self._stage_qs[i + 1] if i + 1 < len(stages) else self._done_q
            for k in range(threads):
                self._threads.append(threading.Thread(target=self._stage_loop, args=(name, fn, self._stage_qs[i], out),
                                                      name=f"{name}-{k}", daemon=True))
        self._next_step = 0
        self._drawn = 0  # samples the prompts drawn so far will make (prompts × group size)
        self._delivered = 0  # samples handed out by next_batch

    # ----------------------------------------------------------------------------------------- control
    def start(self, first_step: int = 0, trained_versions: int = 0) -> None:
        self._next_step = first_step
        self._trained = trained_versions
        for t in self._threads:
            t.start()

    def mark_trained(self, version: int) -> None:
        """The trainer finished an update and rollout workers now hold policy `version`."""
        with self._cond:
            self._trained = version
            self._cond.notify_all()

    def interrupt(self) -> None:
        """Make a waiting (or the next) `next_batch` raise StreamInterrupted within `poll_s`. Safe to call from
        a signal handler: it only sets a flag; the stage threads keep running until `close`."""
        self._interrupted.set()

    def next_batch(self, step: int, timeout_s: float) -> list[list[Sample]]:
        """All groups drawn for rollout step `step`, once every sample of them is scored (or failed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_failed()
            if self._interrupted.is_set():
                raise StreamInterrupted(f"interrupted while waiting for step {step}'s groups")
            with self._lock:
                wanted = self._groups_of_step.get(step)
                if wanted is not None and len(self._complete[step]) == len(wanted):
                    del self._groups_of_step[step]
                    groups = self._complete.pop(step)
                    self._delivered += sum(len(g) for g in groups)
                    return groups
            try:
                work = self._done_q.get(timeout=self.poll_s)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise StreamError(
                        f"step {step}: groups not complete after {timeout_s:g} s "
                        f"({self._assembler.waiting_samples} samples still in flight; queue depths "
                        f"{self.queue_depths()})"
                    ) from None
                continue
            for sample in work.samples:
                group = self._assembler.add(sample)
                if group is not None:
                    with self._lock:
                        self._complete[work.step].append(group)

    @property
    def samples_in_flight(self) -> int:
        """Samples drawn but not yet handed out (in a stage, a queue, or an incomplete group): what a driver
        that discards this stream (a trainer restart rewinds the loader) drops."""
        with self._lock:
            return self._drawn - self._delivered

    def queue_depths(self) -> dict[str, int]:
        return {"rollout": self._rollout_q.qsize(),
                **{name: q.qsize() for name, q in zip(self._stage_names, self._stage_qs)},
                "done": self._done_q.qsize()}

    def close(self, timeout_s: float = 10.0) -> list[str]:
        """Stop every stage thread; wait at most `timeout_s` in all. Returns the names of threads still inside
        a stage call (daemon threads: they end with the process, or when the actor they wait on is killed)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    # ----------------------------------------------------------------------------------------- threads
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StreamError(f"a pipeline stage failed: {self._error!r}") from self._error

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the driver, which stops the run
            self._error = e
            self._stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the run stops (a full queue is backpressure, not a deadlock)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=self.poll_s)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=self.poll_s)
            except queue.Empty:
                continue
        return _STOP

    def _produce(self) -> None:
        def loop():
            while not self._stop.is_set():
                step = self._next_step
                with self._cond:  # staleness gate: step s needs policy version >= s - max_staleness
                    while step - self._trained > self.max_staleness and not self._stop.is_set():
                        self._cond.wait(timeout=self.poll_s)
                if self._stop.is_set():
                    return
                prompts = self.next_prompts()
                with self._lock:
                    self._groups_of_step[step] = {p.prompt_id for p in prompts}
                    self._drawn += len(prompts) * self.group_size
                for p in prompts:
                    self._assembler.expect(p.prompt_id, self.group_size)
                for start in range(0, len(prompts), self.chunk_size):
                    if not self._put(self._rollout_q, _Work(step, prompts[start : start + self.chunk_size])):
                        return
                self._next_step += 1

        self._guard(loop)

    def _rollout_loop(self, fn: RolloutFn) -> None:
        def loop():
            while True:
                work = self._get(self._rollout_q)
                if work is _STOP:
                    return
                samples = self._timed("rollout", lambda: fn(work.samples))
                produced = len(samples)
                if produced != len(work.samples) * self.group_size:
                    raise StreamError(f"rollout returned {produced} samples for {len(work.samples)} prompts "
                                      f"× {self.group_size}")
                # Hand samples downstream in small chunks: rendering starts before the whole shard is done.
                for start in range(0, produced, self.chunk_size):
                    if not self._put(self._stage_qs[0] if self._stage_qs else self._done_q,
                                     _Work(work.step, samples[start : start + self.chunk_size])):
                        return

        self._guard(loop)

    def _stage_loop(self, name: str, fn: StageFn, inbox: queue.Queue, outbox: queue.Queue) -> None:
        def loop():
            while True:
                work = self._get(inbox)
                if work is _STOP:
                    return
                uids = [s.uid for s in work.samples]
                out = self._timed(name, lambda: fn(work.samples))
                if [s.uid for s in out] != uids:
                    raise StreamError(f"stage {name} returned other samples than it was given")
                if not self._put(outbox, _Work(work.step, out)):
                    return

        self._guard(loop)

    def _timed(self, name: str, fn: Callable[[], list[Sample]]) -> list[Sample]:
        t0 = time.perf_counter()
        out = fn()
        stats = self.stats.stages[name]
        with self._lock:
            stats.busy_s += time.perf_counter() - t0
            stats.items += len(out)
        return out
