"""Methods mixed into every vLLM GPU worker (`worker_extension_cls`), called through `LLM.collective_rpc`.

vLLM builds its worker class with this one as an extra base, so `self` is the worker: `self.model_runner.model`
is the engine's model, `self.device` its GPU. Pattern: vllm-project/vllm `examples/offline_inference/
rlhf_utils.py` (WorkerExtension) and verl `verl/workers/rollout/vllm_rollout/utils.py`
(vLLMColocateWorkerExtension). Keep this module importable without vLLM: it is named by its import path.
"""

from __future__ import annotations

import torch

from pipeline.rollout.weight_sync import destroy_weight_group, init_weight_group, receive_weights

WORKER_EXTENSION = f"{__name__}.RolloutWorkerExtension"


class RolloutWorkerExtension:
    weight_group = None

    def _load_named_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        # The model's own loader maps HF checkpoint names (q/k/v, gate/up, vision tower) onto vLLM's fused and
        # tensor-parallel-sharded parameters, exactly as when the checkpoint was read from disk.
        self.model_runner.model.load_weights(weights=named_tensors)

    def init_weight_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> int:
        """Join the trainer's weight-sync group as rank `rank_offset + this worker's TP rank`."""
        from vllm.distributed.parallel_state import get_world_group

        rank = rank_offset + get_world_group().rank
        self.weight_group = init_weight_group(master_address, master_port, rank, world_size, self.device)
        return rank

    def receive_weights(self) -> int:
        """Receive one broadcast from trainer rank 0 into the model. Returns the number of tensors."""
        if self.weight_group is None:
            raise RuntimeError("receive_weights before init_weight_group")
        return receive_weights(self.weight_group, self.device, self._load_named_weights)

    def load_state_dict_items(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load (name, CPU tensor) pairs (the object-store path, e.g. a colocated engine)."""
        self._load_named_weights([(name, tensor.to(self.device)) for name, tensor in named_tensors])
        return len(named_tensors)

    def close_weight_group(self) -> None:
        destroy_weight_group(self.weight_group)
        self.weight_group = None
