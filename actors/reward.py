"""Reward actors: N replicas of the reward scorer (pipeline/critic) behind a load-balancing pool.

`RewardReplica` (Ray actor) micro-batches concurrent requests (up to B pairs or T ms) and runs the per-sample
phase (failure rules, critic, per-sample terms) in a worker thread, so `ping` answers while the model runs.
`RewardPool` (driver side) splits a batch into chunks, sends each to the replica with the fewest chunks in
flight, replaces a replica that died (or stopped answering) and resends its in-flight chunks elsewhere, then
finalises the rewards over the whole batch. Results are matched to samples by uid and checked; a chunk that
exhausts its attempts gives its samples an explicit `reward:unavailable` failure reward.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.pool import ActorSlots, ReplacementBudgetSpent
from pipeline.critic.batcher import MicroBatcher
from pipeline.critic.config import RewardConfig
from pipeline.critic.scorer import RewardScorer
from pipeline.models.config import ModelsConfig
from pipeline.placement import NODE_GROUP_LABEL
from pipeline.rewards.compose import Partial, RewardFunction, infrastructure_failure
from pipeline.sample import Sample

log = logging.getLogger(__name__)


@ray.remote
class RewardReplica:
    def __init__(self, cfg: RewardConfig, models: ModelsConfig, replica_id: int):
        self.replica_id = replica_id
        if cfg.backend == "hf":
            hf = {}
            if cfg.hf.num_threads is None:  # torch would use every core of the node, not the actor's share
                hf["num_threads"] = max(1, int(cfg.actors.num_cpus))
            if cfg.actors.num_gpus > 0 and cfg.hf.device == "cpu":  # Ray sets CUDA_VISIBLE_DEVICES for us
                hf["device"] = "cuda"
            if hf:
                cfg = cfg.model_copy(update={"hf": cfg.hf.model_copy(update=hf)})
        self.scorer = RewardScorer(cfg, models)
        self.scorer.warmup()  # load the model now: a replica is ready only when it can score
        b = cfg.batching
        self.batcher = MicroBatcher(self.scorer.measure, b.max_batch, b.max_wait_ms / 1000.0,
                                    concurrency=cfg.batch_concurrency())
        # Consecutive requests whose every judged sample came back as an engine error: an engine that died
        # inside this live process (CUDA error, vLLM EngineDeadError, endpoint gone) still answers `ping`.
        self.engine_failure_streak = 0
        self.engine_dead_after = cfg.actors.engine_dead_after

    async def ready(self) -> int:
        return self.replica_id

    async def ping(self) -> dict[str, Any]:
        return {"replica": self.replica_id, "pending": self.batcher.pending,
                "engine_ok": self.engine_failure_streak < self.engine_dead_after}

    async def measure(self, samples: list[Sample]) -> list[Partial]:
        partials = await self.batcher.submit(samples)
        judged, failed = engine_failures(partials)
        if judged:
            self.engine_failure_streak = self.engine_failure_streak + 1 if failed == judged else 0
        return partials

    async def stats(self) -> dict[str, Any]:
        return {"replica": self.replica_id, "batches": list(self.batcher.batches), **self.scorer.stats()}


def engine_failures(partials: list[Partial]) -> tuple[int, int]:
    """(samples that reached the critic, those whose judgement failed in the engine, not in the answer)."""
    judged = [p for p in partials if p.failure is None]
    failed = sum(1 for p in judged if (infrastructure_failure(p) or "").startswith("critic:"))
    return len(judged), failed


@dataclass
class _Chunk:
    index: int
    samples: list[Sample]
    attempts: int = 0
    replica: int = -1
    sent_at: float = 0.0


class RewardPool:
    """Driver-side client of the reward replicas. Thread-safe: several threads may call `score` at once.

    A replica's id is its spawn number (0, 1, ... then its replacements'): ids are never reused, so a late
    answer or failure report about a replaced replica never touches its successor.
    """

    def __init__(self, cfg: RewardConfig, models: ModelsConfig, start_timeout_s: float = 120.0):
        self.cfg = cfg
        self.models = models
        self.in_flight: dict[int, int] = {}  # replica id → chunks in flight
        self.retried_chunks = 0
        self.dead_engines = 0  # replicas replaced because their engine died inside a live process
        self.function = RewardFunction(cfg)
        self._actors = ActorSlots("reward replica", self._new_replica, cfg.actors.replicas, start_timeout_s,
                                  max_replacements=cfg.actors.max_replacements)
        self._lock = self._actors.lock  # one lock for the replicas and the counters

    # -- replicas -----------------------------------------------------------------------------------------
    @property
    def replicas(self) -> dict[int, Any]:
        """Replica id → actor handle, oldest first."""
        with self._lock:
            return dict(sorted(zip(self._actors.serials, self._actors.handles), key=lambda pair: pair[0]))

    @property
    def replacements(self) -> int:
        return self._actors.replacements

    def _new_replica(self, rid: int):
        a = self.cfg.actors
        selector = {NODE_GROUP_LABEL: a.node_group} if a.node_group else {}
        return RewardReplica.options(num_cpus=a.num_cpus, num_gpus=a.num_gpus, label_selector=selector,
                                     name=None, max_restarts=0).remote(self.cfg, self.models, rid)

    def _replace(self, rid: int, why: str) -> None:
        """Kill replica `rid` and start a replacement (once, however many chunks noticed the failure); past
        `reward.actors.max_replacements` the pool shrinks instead, down to no replica (chunks are then given up
        as unavailable)."""
        with self._lock:
            handle = self.replicas.get(rid)
            if handle is None:
                return  # already replaced
            self.in_flight.pop(rid, None)
            try:
                successor = self._actors.replace(handle)
            except ReplacementBudgetSpent:
                self._actors.retire(handle)
                successor = None
        log.warning("reward replica %d failed (%s): %s", rid, why,
                    f"replaced by {successor.serial}" if successor else "replacement budget spent")
        if successor is not None and not self._actors.started(successor.handle):
            with self._lock:
                self._actors.retire(successor.handle)
                self.in_flight.pop(successor.serial, None)

    def _pick(self) -> int | None:
        with self._lock:
            if not self.replicas:
                return None
            return min(self.replicas, key=lambda r: (self.in_flight.get(r, 0), r))

    def check_health(self, timeout_s: float | None = None) -> dict[int, bool]:
        """Ping every replica; replace those that are dead or do not answer in time."""
        timeout_s = timeout_s or self.cfg.actors.health_timeout_s
        with self._lock:
            items = list(self.replicas.items())
        refs = {rid: h.ping.remote() for rid, h in items}
        health = {}
        deadline = time.monotonic() + timeout_s
        for rid, ref in refs.items():
            try:
                health[rid] = ray.get(ref, timeout=max(0.01, deadline - time.monotonic())).get("engine_ok", True)
                if not health[rid]:
                    self.dead_engines += 1
                    self._replace(rid, "health check: its engine fails every request (alive process)")
            except (RayActorError, GetTimeoutError) as e:
                health[rid] = False
                self._replace(rid, f"health check: {type(e).__name__}")
        return health

    # -- scoring ------------------------------------------------------------------------------------------
    def _send(self, chunk: _Chunk) -> tuple[ray.ObjectRef, _Chunk] | None:
        rid = self._pick()
        if rid is None:
            return None
        with self._lock:
            handle = self.replicas.get(rid)
            if handle is None:
                return self._send(chunk)
            self.in_flight[rid] = self.in_flight.get(rid, 0) + 1
        chunk.attempts += 1
        chunk.replica = rid
        chunk.sent_at = time.monotonic()
        return handle.measure.remote(chunk.samples), chunk

    def _done(self, chunk: _Chunk) -> None:
        with self._lock:
            if chunk.replica in self.in_flight:
                self.in_flight[chunk.replica] -= 1

    def measure(self, samples: list[Sample], timeout_s: float | None = None) -> list[Partial]:
        """Per-sample phase on the replicas; one Partial per sample, in order, identity checked."""
        a = self.cfg.actors
        size = self.cfg.batching.chunk_size
        chunks = [_Chunk(i, samples[s : s + size]) for i, s in enumerate(range(0, len(samples), size))]
        results: dict[int, list[Partial]] = {}
        pending: dict[ray.ObjectRef, _Chunk] = {}

        def give_up(chunk: _Chunk, why: str) -> None:
            # Excluded from the update, not scored: say why here, the samples' metrics only count the kind.
            log.warning("reward: %d sample(s) excluded, no score: %s", len(chunk.samples), why)
            results[chunk.index] = [Partial(uid=s.uid, failure=f"unavailable:{why}") for s in chunk.samples]

        def send_or_fail(chunk: _Chunk, why: str) -> None:
            if chunk.attempts >= a.max_request_attempts:
                give_up(chunk, f"{why} (after {chunk.attempts} attempts)")
                return
            sent = self._send(chunk)
            if sent is None:
                give_up(chunk, "no reward replica left")
            else:
                pending[sent[0]] = sent[1]
                if chunk.attempts > 1:
                    with self._lock:
                        self.retried_chunks += 1

        for chunk in chunks:
            send_or_fail(chunk, "not sent")
        overall = time.monotonic() + (timeout_s or a.request_timeout_s * a.max_request_attempts + 60)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            now = time.monotonic()
            for ref in ready:
                chunk = pending.pop(ref)
                self._done(chunk)
                try:
                    partials = ray.get(ref, timeout=60)
                except RayActorError as e:
                    self._replace(chunk.replica, f"{type(e).__name__}")
                    send_or_fail(chunk, "replica died")
                    continue
                except Exception as e:  # noqa: BLE001 - the replica's scorer raised: try elsewhere
                    log.warning("reward chunk failed on replica %d: %s", chunk.replica, str(e)[:300])
                    send_or_fail(chunk, f"error {type(e).__name__}")
                    continue
                if [p.uid for p in partials] != [s.uid for s in chunk.samples]:
                    # Never attach a result to the wrong sample: treat as a failed attempt.
                    log.error("reward replica %d returned results for other samples", chunk.replica)
                    send_or_fail(chunk, "identity mismatch")
                    continue
                results[chunk.index] = partials  # kept if the retry below cannot be made: excluded samples
                judged, failed = engine_failures(partials)
                if judged and failed == judged and chunk.attempts < a.max_request_attempts:
                    # Every judgement failed in the engine: an infrastructure failure, retried on a healthy
                    # replica (the health check replaces this one if its engine is dead).
                    self.check_health()
                    send_or_fail(chunk, "engine errors")
            for ref, chunk in list(pending.items()):
                if now > overall:  # the caller's deadline: no more retries, explicit failures
                    pending.pop(ref)
                    self._done(chunk)
                    ray.cancel(ref, force=False)
                    give_up(chunk, "deadline of the scoring call passed")
                elif now - chunk.sent_at > a.request_timeout_s:
                    pending.pop(ref)
                    self._done(chunk)
                    ray.cancel(ref, force=False)
                    self.check_health()  # a dead or hung replica is replaced before the retry
                    send_or_fail(chunk, "timeout")
        return [p for i in range(len(chunks)) for p in results[i]]

    def score(self, samples: list[Sample], timeout_s: float | None = None) -> dict[str, Any]:
        """Score a batch: every sample gets reward, breakdown and discrepancies (or a failure reward)."""
        partials = self.measure(samples, timeout_s)
        stats = self.function.finalize(samples, partials)
        stats.update(replacements=self.replacements, retried_chunks=self.retried_chunks)
        return stats

    def stats(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        with self._lock:
            handles = list(self.replicas.values())
        return ray.get([h.stats.remote() for h in handles], timeout=timeout_s)

    def shutdown(self) -> None:
        self._actors.shutdown()
