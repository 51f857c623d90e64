"""Rollout workers: Ray actors around a rollout backend (pipeline/rollout), chosen by `rollout.backend`, and the
driver-side `RolloutPool` that replaces a worker that dies or hangs and re-issues its prompts."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.pool import ActorSlots, ReplacementBudgetSpent, wait_ready
from pipeline.models.config import ModelsConfig
from pipeline.rollout import make_rollout
from pipeline.rollout.config import RolloutConfig
from pipeline.sample import Sample

log = logging.getLogger(__name__)


@ray.remote
class RolloutWorker:
    def __init__(self, models: ModelsConfig, rollout: RolloutConfig, seed: int):
        self.backend_name = rollout.backend
        self.backend = make_rollout(models, rollout, device="cpu" if rollout.num_gpus == 0 else "cuda", seed=seed)
        # Ranks this worker takes in the NCCL weight group: one per tensor-parallel engine worker.
        self.weight_group_size = rollout.vllm.tensor_parallel_size if rollout.backend == "vllm" else 0

    def ready(self) -> bool:
        return True

    def version(self) -> int:
        return self.backend.version

    def generate(self, prompts: list[Sample], n: int | None = None, greedy: bool = False) -> list[Sample]:
        return self.backend.generate(prompts, n, greedy)

    def load_weights(self, state_dict, version: int) -> None:
        """Object-store weight sync: a full state dict (Ray resolves the ObjectRef the trainer passed)."""
        self.backend.load_weights(state_dict, version)

    # NCCL weight sync (vLLM backend only; config validation refuses other combinations).
    def weight_group_ranks(self) -> int:
        return self.weight_group_size

    def init_weight_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> list:
        self._require_vllm("rollout.weight_sync=nccl")
        return self.backend.init_weight_group(master_address, master_port, rank_offset, world_size)

    def receive_weights(self, version: int) -> int:
        self._require_vllm("rollout.weight_sync=nccl")
        return self.backend.receive_weights(version)

    # Sleep mode, when the engine shares its GPUs with the trainer (no-ops for hf / without sleep mode).
    def sleep(self, level: int = 1) -> None:
        if hasattr(self.backend, "sleep"):
            self.backend.sleep(level)

    def wake_up(self) -> None:
        if hasattr(self.backend, "wake_up"):
            self.backend.wake_up()

    def _require_vllm(self, what: str) -> None:
        if self.backend_name != "vllm":
            raise RuntimeError(f"{what} needs rollout.backend=vllm; this worker runs {self.backend_name!r}")


class RolloutPool:
    """Driver-side handle on the rollout workers: the stream, evaluation and revision call `generate` here.

    A worker that dies, or hangs past `rollout.timeout_s` (treated as dead), is killed and replaced — exactly that
    worker, found by identity under a lock, so concurrent callers that noticed the same death replace it once.
    The replacement loads the weights the others serve (the last published state dict and its policy version)
    before it is handed any prompt, then the call that failed is re-issued to it: its samples were never
    returned, so nothing is counted twice. At most `rollout.max_replacements` replacements per run; past that the
    error reaches the stream, which stops the run (the driver saves a checkpoint first).
    """

    def __init__(self, models: ModelsConfig, rollout: RolloutConfig, seed: int, start_timeout_s: float,
                 options: dict | None = None):
        self.models, self.cfg, self.seed = models, rollout, seed
        self.options = options or {}
        self._weights: tuple[Any, int] | None = None  # (state-dict ObjectRef, version) the workers serve
        self.reissued = 0
        self._actors = ActorSlots("rollout worker", self._spawn, rollout.replicas, start_timeout_s,
                                  max_replacements=rollout.max_replacements)
        self._lock = self._actors.lock  # one lock for the slots, the weights and the counters

    @property
    def workers(self) -> list:
        return self._actors.handles

    @property
    def replacements(self) -> int:
        return self._actors.replacements

    def __len__(self) -> int:
        return len(self.workers)

    def _spawn(self, serial: int):
        # seed + serial: replacements draw fresh randomness, not a replay of the dead worker's
        return RolloutWorker.options(**self.options).remote(self.models, self.cfg, seed=self.seed + serial)

    # -- calls --------------------------------------------------------------------------------------------
    def generate(self, index: int, prompts: list[Sample], n: int | None = None, greedy: bool = False
                 ) -> list[Sample]:
        """`generate` on worker `index` (the stream's rollout thread `index`), re-issued on a replacement if
        that worker dies or hangs."""
        while True:
            handle = self.workers[index]
            try:
                return ray.get(handle.generate.remote(prompts, n, greedy), timeout=self.cfg.timeout_s)
            except (RayActorError, GetTimeoutError) as e:
                why = "hung" if isinstance(e, GetTimeoutError) else "died"
                self._replace(handle, f"{why} in generate ({type(e).__name__})")
                with self._lock:
                    self.reissued += 1

    def call_all(self, method: str, *args, timeout_s: float | None = None) -> list:
        """`method(*args)` on every worker (sleep / wake_up); a dead one is replaced and called again."""
        out = []
        for index in range(len(self.workers)):
            while True:
                handle = self.workers[index]
                try:
                    out.append(ray.get(getattr(handle, method).remote(*args),
                                       timeout=timeout_s or self.cfg.timeout_s))
                    break
                except (RayActorError, GetTimeoutError) as e:
                    self._replace(handle, f"{method}: {type(e).__name__}")
        return out

    def sync_weights(self, trainer) -> dict[str, float]:
        """Ship the trainer's current weights to every worker (object store: the trainer publishes once, each
        worker loads; a worker that fails to load is replaced and the replacement loads the same weights).
        NCCL engines form one fixed group with the trainer: that path is the trainer's own, and a dead worker
        there is an error (an NCCL group cannot take a new member)."""
        if trainer.weight_sync == "nccl":  # behind at most one generate per worker, then the transfer
            return trainer.sync_weights(self.workers, timeout_s=self.cfg.timeout_s + trainer.cfg.call_timeout_s)
        started = time.perf_counter()
        ref, version = trainer.publish_weights(), trainer.version
        published = time.perf_counter()
        with self._lock:
            self._weights = (ref, version)
            workers = list(self.workers)
        loads = [w.load_weights.remote(ref, version) for w in workers]
        for handle, load in zip(workers, loads):
            try:
                ray.get(load, timeout=self.cfg.timeout_s + trainer.cfg.call_timeout_s)
            except (RayActorError, GetTimeoutError) as e:
                self._replace(handle, f"weight load: {type(e).__name__}")  # the replacement loads `ref` itself
        return {"weight_export_s": published - started, "weight_sync_s": time.perf_counter() - started,
                "synced_version": float(version)}

    # -- replacement --------------------------------------------------------------------------------------
    def _replace(self, dead, why: str) -> None:
        with self._lock:
            index = self._actors.index(dead)
            if index is None:
                return  # another caller replaced it already
            if self.cfg.weight_sync == "nccl":  # an NCCL group cannot take a new member
                raise RolloutError(f"rollout worker {index} {why}; a worker of a NCCL weight group cannot be "
                                   "replaced within the run (restart the run: trainer.resume=true)")
            weights = self._weights

            def serve(new) -> None:  # the policy version every other worker serves, before any prompt
                wait_ready([new], self._actors.what, self._actors.start_timeout_s)
                if weights is not None:
                    ray.get(new.load_weights.remote(*weights), timeout=self.cfg.timeout_s)

            try:
                successor = self._actors.replace(dead, prepare=serve)
            except ReplacementBudgetSpent as e:
                raise RolloutError(f"rollout worker {e.index} {why}; the replacement budget "
                                   f"(rollout.max_replacements={self.cfg.max_replacements}) is spent") from None
        if successor is not None:
            log.warning("rollout worker %d %s: replaced (policy version %s; %d replacement(s) so far)",
                        successor.index, why, weights[1] if weights else 0, self.replacements)

    def shutdown(self) -> None:
        self._actors.shutdown()


class RolloutError(RuntimeError):
    """A rollout worker failed and could not be replaced."""
