"""Methods mixed into every vLLM GPU worker (`worker_extension_cls`), called through `LLM.collective_rpc`.

vLLM builds its worker class with this one as an extra base, so `self` is the worker (vllm/v1/worker/
gpu_worker.py: `self.model_runner` from `init_device`, `self.device`, `self.model_config`). These methods serve
the object-store weight path (a state dict from Ray, in chunks). The NCCL path needs none of them: vLLM's own
weight transfer engine receives (pipeline/rollout/weight_sync.py). Both load inside vLLM's layerwise-reload
lifecycle (`initialize_layerwise_reload` → the model's `load_weights` → `finalize_layerwise_reload`), i.e. with
the post-load processing a checkpoint load runs, as vLLM's `reload_weights` and its NCCL engine do.

Keep this module importable without vLLM: it is named by its import path.
"""

from __future__ import annotations

import torch

WORKER_EXTENSION = f"{__name__}.RolloutWorkerExtension"


class RolloutWorkerExtension:
    def begin_weight_load(self) -> None:
        # heavy: vLLM: the GPU extra, only this path needs it
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model_runner.get_model())

    def load_state_dict_items(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load (name, CPU tensor) pairs. The model's own loader maps HF checkpoint names (q/k/v, gate/up, the
        vision tower) onto vLLM's fused and tensor-parallel-sharded parameters, as when reading the checkpoint."""
        model = self.model_runner.get_model()
        model.load_weights(weights=[(name, tensor.to(self.device)) for name, tensor in named_tensors])
        return len(named_tensors)

    def finish_weight_load(self) -> None:
        # heavy: vLLM: the GPU extra, only this path needs it
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model_runner.get_model(), self.model_config)
