"""Rollout workers: Ray actors around a rollout backend (pipeline/rollout), chosen by `rollout.backend`."""

from __future__ import annotations

import ray

from pipeline.config import ModelsConfig, RolloutConfig
from pipeline.rollout import make_rollout
from pipeline.sample import Sample


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
