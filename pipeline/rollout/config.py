"""The `rollout:` section: backend (hf, vllm), sampling, replicas and placement, weight sync, revision rounds."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from pipeline.schema import Strict


class SamplingConfig(Strict):
    n: int = Field(4, ge=1)  # responses per prompt = GRPO group size
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = off
    max_new_tokens: int = Field(64, ge=1)


class VLLMRolloutConfig(Strict):
    """vLLM engine settings (GPU presets; vLLM is an optional extra, absent on CPU machines)."""

    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    max_model_len: int = Field(16384, ge=256)
    max_num_seqs: int = Field(256, ge=1)
    enforce_eager: bool = False
    # Colocated with the trainer on the same GPUs: free the KV cache and weights between rollouts.
    enable_sleep_mode: bool = False
    seed: int = 0


class RolloutConfig(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    vllm: VLLMRolloutConfig = VLLMRolloutConfig()
    # How updated weights reach the rollout workers: the Ray object store (CPU, small models) or a NCCL
    # broadcast from trainer rank 0 into the engines (vLLM `collective_rpc`; GPU).
    weight_sync: Literal["object_store", "nccl"] = "object_store"
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Ray node label `ray.io/node-group` (a KubeRay worker group name) the replicas must run on; None = any node.
    node_group: Optional[str] = None
    sampling: SamplingConfig = SamplingConfig()
    timeout_s: float = Field(300.0, gt=0)  # one generate call; a worker past it is treated as dead
    # Workers replaced (died or hung) per run before a rollout failure stops the run (actors/rollout.py).
    max_replacements: int = Field(4, ge=0)
    # Each rollout becomes an episode: first answer, critic feedback, revised answer (× rounds); GRPO trains
    # the revised turns too, grouped per prompt and round (pipeline/revision.py). 0 = first answers only.
    revision_rounds: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_backend_and_weight_sync(self) -> RolloutConfig:
        # Start-up errors for combinations that could only fail later, on the cluster. (nccl needs vllm, and
        # vllm needs GPUs: so nccl without rollout GPUs is refused too.)
        if self.backend == "vllm" and self.num_gpus < self.vllm.tensor_parallel_size:
            raise ValueError(
                f"rollout.backend=vllm needs rollout.num_gpus >= rollout.vllm.tensor_parallel_size "
                f"({self.vllm.tensor_parallel_size}) GPUs per rollout worker, got {self.num_gpus:g}"
            )
        if self.weight_sync == "nccl":
            if self.backend != "vllm":
                raise ValueError(
                    "rollout.weight_sync=nccl broadcasts into vLLM engines: it needs rollout.backend=vllm "
                    "(the hf backend syncs through the object store: rollout.weight_sync=object_store)"
                )
            if self.vllm.enable_sleep_mode:
                raise ValueError(
                    "rollout.weight_sync=nccl cannot serve engines colocated with the trainer "
                    "(rollout.vllm.enable_sleep_mode): NCCL cannot pair two processes on one GPU; use "
                    "rollout.weight_sync=object_store"
                )
        return self
