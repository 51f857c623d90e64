"""One trainer rank: the policy (and frozen reference) engines of one FSDP process, and what it is asked to do.

`actors/trainer.py` wraps this class in a Ray actor, one per rank; `TrainerGroup` there drives all ranks in
lock-step. Every method except `__init__` that touches the model is a collective over the ranks (FSDP2
all-gathers parameters, verl all-reduces the loss and gradients, checkpoints barrier): all ranks must call it
with equally sized shards, or the group hangs until the collective timeout.

No Ray here: the same object runs in a test process or any other launcher.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.training.config import TrainerConfig

log = logging.getLogger(__name__)


class RankTrainer:
    def __init__(
        self, rank: int, world_size: int, model_path: str | Path, cfg: TrainerConfig, group_size: int
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.model_path = str(model_path)
        self.cfg = cfg
        self.group_size = group_size
        self.device = "cuda" if cfg.num_gpus_per_rank > 0 else "cpu"
        self.policy = None
        self.reference = None
        self.weight_group = None  # rank 0's end of the NCCL weight-sync group (rollout.weight_sync=nccl)

    def setup(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the process group and build the engines. All ranks call this with the same address/port."""
        # heavy: pulls in psutil, verl (4 s to import)
        from pipeline.training.verl_platform import prepare_process_for_verl

        started = time.perf_counter()
        threads = self.cfg.threads_per_rank or max(1, int(self.cfg.num_cpus_per_rank))
        prepare_process_for_verl(
            self.device,
            self.rank,
            self.world_size,
            master_addr,
            master_port,
            timeout_s=self.cfg.collective_timeout_s,
            num_threads=threads,
        )
        joined = time.perf_counter()
        # heavy: pulls in transformers, verl (4 s to import)
        from pipeline.training.engine import create_policy_worker, create_reference_worker

        self.policy = create_policy_worker(self.model_path, self.cfg, group_size=self.group_size)
        if self.cfg.use_kl_loss:
            self.reference = create_reference_worker(self.model_path, self.cfg)
        return {"rendezvous_s": joined - started, "engine_build_s": time.perf_counter() - joined}

    def _require_setup(self) -> None:
        if self.policy is None:
            raise RuntimeError(f"trainer rank {self.rank}: setup() has not run")

    def update(self, shard: Any, global_batch_size: int) -> dict[str, float]:
        """One GRPO update on this rank's shard of the batch (a DataProto from `build_grpo_batch`)."""
        from pipeline.training.engine import grpo_update  # heavy: pulls in transformers, verl (4 s to import)

        self._require_setup()
        return grpo_update(
            self.policy, shard, self.cfg, reference=self.reference, global_batch_size=global_batch_size
        )

    def compute_log_probs(self, shard: Any, reference: bool = False) -> torch.Tensor:
        """(B, R) response log-probs of this rank's shard under the current policy (or the reference)."""
        # heavy: pulls in transformers, verl (4 s to import)
        from pipeline.training.engine import compute_log_probs

        self._require_setup()
        worker = self.reference if reference else self.policy
        if worker is None:
            raise ValueError("no reference worker: trainer.use_kl_loss is false")
        return compute_log_probs(worker, shard)["log_probs"]

    def export_weights(self) -> dict[str, torch.Tensor]:
        """The full, HF-named policy state dict on CPU (every rank gets a copy; a collective), floating tensors
        in the compute dtype (`param_dtype`: bf16 on the GPU presets, as the engines), not the fp32 master copy."""
        # heavy: pulls in transformers, verl (4 s to import)
        from pipeline.training.engine import export_policy_weights

        self._require_setup()
        return export_policy_weights(self.policy, dtype=self.cfg.param_dtype)

    def init_weight_group(self, master_address: str, master_port: int, world_size: int) -> None:
        """Rank 0 joins the NCCL weight-sync group with the rollout engines (as its rank 0). GPU only."""
        from pipeline.rollout.weight_sync import init_weight_group  # heavy: pulls in transformers

        if self.rank != 0:
            raise ValueError("only trainer rank 0 sends weights")
        if self.device != "cuda":
            raise RuntimeError("rollout.weight_sync=nccl needs GPU trainer ranks (trainer.num_gpus_per_rank > 0)")
        self.weight_group = init_weight_group(
            master_address, master_port, 0, world_size, torch.device("cuda", torch.cuda.current_device()),
            timeout_s=self.cfg.collective_timeout_s,
        )

    def broadcast_weights(self, dtype: str | None = None) -> dict[str, float]:
        """Gather the full policy tensor by tensor (a collective: every rank calls this) and, on rank 0,
        broadcast each into the rollout engines as it is gathered (cast to `dtype`, the engines' dtype)."""
        from pipeline.rollout.weight_sync import broadcast_weights  # heavy: pulls in transformers
        # heavy: pulls in transformers, verl (4 s to import)
        from pipeline.training.engine import policy_weight_meta

        self._require_setup()
        if self.rank == 0 and self.weight_group is None:
            raise RuntimeError("broadcast_weights before init_weight_group")
        # verl's FSDP2 engine yields (HF name, full tensor on this rank's GPU), all-gathering lazily per tensor
        # (workers/engine/fsdp/transformer_impl.py: get_per_tensor_param), as export_policy_weights uses it.
        per_tensor, _peft_config = self.policy.engine.get_per_tensor_param()
        if self.rank != 0:
            count = 0
            for _name, _tensor in per_tensor:  # take part in each all-gather; rank 0 does the sending
                count += 1
            return {"tensors": float(count), "bytes": 0.0}
        wire = getattr(torch, dtype) if dtype else None
        return broadcast_weights(self.weight_group, per_tensor, wire, policy_weight_meta(self.policy, wire))

    def save_checkpoint(self, path: str | Path, step: int) -> None:
        """verl's engine checkpoint into `path`: this rank's parameter and optimizer shards, lr scheduler, RNG."""
        self._require_setup()
        self.policy.save_checkpoint(str(path), global_step=step, max_ckpt_to_keep=None)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what `save_checkpoint` wrote (same world size). The reference stays the initial model."""
        self._require_setup()
        self.policy.load_checkpoint(str(path), del_local_after_load=False)

    def shutdown(self) -> None:
        from pipeline.rollout.weight_sync import destroy_weight_group  # heavy: pulls in transformers

        # heavy: pulls in psutil, verl (4 s to import)
        from pipeline.training.verl_platform import shutdown_process_group

        destroy_weight_group(self.weight_group)
        self.policy = self.reference = self.weight_group = None
        shutdown_process_group()
