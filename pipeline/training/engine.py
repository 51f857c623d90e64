"""verl's FSDP2 TrainingWorker as the GRPO trainer: configs from `TrainerConfig`, log-probs, one update.

Everything here runs inside the process that hosts one trainer rank (a Ray actor in production, a test process
here); the process must first call `pipeline.training.verl_platform.prepare_process_for_verl_cpu` on CPU machines (on GPU
machines verl's own NVIDIA platform and nccl apply). The worker object is verl's `TrainingWorker` called
directly, not through a verl RayWorkerGroup: our own Ray actor owns the process.

Note: building a worker applies verl's monkey patches to the transformers model classes of this process
(`verl/models/transformers/monkey_patch.py` replaces `Qwen3VLModel.forward` and
`Qwen3VLForConditionalGeneration.forward` class-wide). Do not run HF `generate` for rollouts in the same
process as a trainer.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import torch
from verl import DataProto
from verl.trainer.config import CheckpointConfig
from verl.workers.config import (
    FSDPActorConfig,
    FSDPEngineConfig,
    FSDPOptimizerConfig,
    HFModelConfig,
    TrainingWorkerConfig,
)

from pipeline.rollout.weight_sync import to_wire, weight_meta
from pipeline.training.batch import to_engine_input
from pipeline.training.config import TrainerConfig

_VERL_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}


# ---------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------
def build_model_config(model_path: str | Path, cfg: TrainerConfig) -> HFModelConfig:
    return HFModelConfig(
        path=str(model_path),
        # verl defaults to flash_attention_2, which needs CUDA.
        override_config={"attn_implementation": cfg.attn_implementation},
        use_remove_padding=cfg.use_remove_padding,
        enable_gradient_checkpointing=cfg.gradient_checkpointing,
    )


def build_training_worker_config(
    model_path: str | Path, cfg: TrainerConfig, forward_only: bool = False
) -> TrainingWorkerConfig:
    """verl's TrainingWorkerConfig for the policy (or, forward_only=True, the frozen reference policy)."""
    dtype = _VERL_DTYPE[cfg.param_dtype]
    engine = FSDPEngineConfig(
        strategy=cfg.strategy,
        forward_only=forward_only,
        # The policy keeps fp32 master weights (compute runs in param_dtype). A forward-only engine (the frozen
        # reference) has no optimizer to feed: it holds its weights in the compute dtype, half the memory and
        # half the host transfer when verl offloads it (bf16 on GPU; fp32, as before, on CPU).
        model_dtype=dtype if forward_only else "fp32",
        mixed_precision={"param_dtype": dtype, "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
        fsdp_size=cfg.fsdp_size,
        use_dynamic_bsz=False,
        micro_batch_size_per_gpu=cfg.micro_batch_size_per_device,
        infer_micro_batch_size_per_gpu=cfg.infer_micro_batch_size_per_device or cfg.micro_batch_size_per_device,
        use_torch_compile=False,  # torch.compile of the entropy kernel costs more than it saves at this scale
        seed=cfg.seed,
    )
    optimizer = None
    if not forward_only:
        optimizer = FSDPOptimizerConfig(
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
            clip_grad=cfg.clip_grad,
            lr_warmup_steps=cfg.lr_warmup_steps,
            total_training_steps=cfg.total_training_steps,
            lr_scheduler_type=cfg.lr_scheduler_type,
        )
    return TrainingWorkerConfig(
        model_type="language_model",
        model_config=build_model_config(model_path, cfg),
        engine_config=engine,
        optimizer_config=optimizer,
        checkpoint_config=CheckpointConfig(),
    )


def build_actor_loss_config(cfg: TrainerConfig, group_size: int = 1) -> FSDPActorConfig:
    """The ActorConfig verl's `ppo_loss` reads: PPO-clip policy loss, KL loss, entropy bonus, aggregation."""
    return FSDPActorConfig(
        strategy=cfg.strategy,
        rollout_n=group_size,
        ppo_mini_batch_size=cfg.mini_batch_size or 1,  # only validated here; grpo_update passes the real one
        ppo_micro_batch_size_per_gpu=cfg.micro_batch_size_per_device,
        ppo_epochs=cfg.ppo_epochs,
        use_dynamic_bsz=False,
        policy_loss={"loss_mode": cfg.policy_loss},
        clip_ratio=cfg.clip_ratio_low,
        clip_ratio_low=cfg.clip_ratio_low,
        clip_ratio_high=cfg.clip_ratio_high,
        clip_ratio_c=cfg.clip_ratio_c,
        loss_agg_mode=cfg.loss_agg_mode,
        use_kl_loss=cfg.use_kl_loss,
        kl_loss_coef=cfg.kl_loss_coef,
        kl_loss_type=cfg.kl_loss_type,
        entropy_coeff=cfg.entropy_coeff,
        use_torch_compile=False,
    )


# ---------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------
def create_policy_worker(model_path: str | Path, cfg: TrainerConfig, group_size: int = 1):
    """The trainable policy: verl TrainingWorker with an FSDP2 engine, optimizer and verl's ppo_loss."""
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.engine_workers import TrainingWorker
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.utils.losses import ppo_loss

    worker = TrainingWorker(build_training_worker_config(model_path, cfg))
    worker.reset()  # builds model, FSDP2 wrapping, optimizer, LR schedule
    worker.set_loss_fn(partial(ppo_loss, config=build_actor_loss_config(cfg, group_size)))
    return worker


def create_reference_worker(model_path: str | Path, cfg: TrainerConfig):
    """The frozen reference policy for the KL loss: a forward-only engine (no optimizer state)."""
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.engine_workers import TrainingWorker

    worker = TrainingWorker(build_training_worker_config(model_path, cfg, forward_only=True))
    worker.reset()
    return worker


# ---------------------------------------------------------------------------------------------------------
# Forward / update
# ---------------------------------------------------------------------------------------------------------
def compute_log_probs(worker, batch: DataProto, with_entropy: bool = False) -> dict[str, torch.Tensor]:
    """Per-token log-probs (and entropy) of the batch's responses under `worker`'s current weights, (B, R)."""
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.utils import tensordict_utils as tu

    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.utils.padding import no_padding_2_padding

    td = to_engine_input(batch)
    tu.assign_non_tensor(td, calculate_entropy=with_entropy, compute_loss=False)
    output = worker.infer_batch(td)
    result = {"log_probs": no_padding_2_padding(tu.get(output, "log_probs"), td).float()}
    if with_entropy:
        result["entropy"] = no_padding_2_padding(tu.get(output, "entropy"), td).float()
    response_mask = batch.batch["response_mask"].bool()
    return {k: v * response_mask for k, v in result.items()}  # zero, not garbage, on padding


def _mean(value) -> float:
    values = value if isinstance(value, list) else [value]
    values = [float(v) for v in values]
    return sum(values) / len(values)


def importance_ratio_stats(
    current_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, response_mask: torch.Tensor
) -> dict[str, float]:
    """How far the trainer's policy (before this update) is from the policy that sampled the batch.

    Per response token, ratio = pi_trainer / pi_rollout = exp(current - rollout). It is ~1 when rollouts are
    on-policy and both sides compute the same numbers; it drifts with staleness (rollouts made by an older
    version, `max_staleness`) and with numeric mismatch (vLLM bf16 vs FSDP). `response_tokens` lets the caller
    combine ranks (token-weighted mean, min of mins, max of maxes).
    """
    mask = response_mask.bool()
    diff = (current_log_probs - rollout_log_probs.float())[mask].double()
    if diff.numel() == 0:
        return {"response_tokens": 0.0}
    ratio = diff.clamp(-20, 20).exp()  # same clamp as verl's PPO loss
    return {
        "rollout_ratio_mean": float(ratio.mean()),
        "rollout_ratio_min": float(ratio.min()),
        "rollout_ratio_max": float(ratio.max()),
        "rollout_log_prob_abs_diff": float(diff.abs().mean()),
        "response_tokens": float(diff.numel()),
    }


def rollout_is_weights(
    current_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, response_mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights min(pi_old / pi_rollout, cap) per response token (verl's token-level
    `rollout_is_weights`, `trainer/ppo/rollout_corr_helper.py`), zero on padding, no gradient; with the share of
    tokens the cap truncated. pi_old is the trainer's policy before the update, pi_rollout the one that sampled."""
    mask = response_mask.bool()
    log_ratio = (current_log_probs.float() - rollout_log_probs.float()).clamp(-20, 20)  # verl's safety bound
    raw = log_ratio.exp() * mask
    weights = raw.clamp(max=cap).detach()
    tokens = int(mask.sum())
    if tokens == 0:
        return weights, {}
    return weights, {
        "rollout_is_weight_mean": float(weights[mask].double().mean()),
        "rollout_is_clipped_frac": float((raw[mask] > cap).double().mean()),
    }


def grpo_update(
    policy,
    batch: DataProto,
    cfg: TrainerConfig,
    reference=None,
    global_batch_size: int | None = None,
) -> dict[str, float]:
    """One GRPO update of `policy` on this rank's share of a batch from `build_grpo_batch`.

    With several ranks each calls this with its own shard (`shard_for_rank`) and the same `global_batch_size`
    (the whole batch, all ranks); FSDP2 averages the gradients. With the KL loss on, `reference` (from
    `create_reference_worker`) supplies the reference log-probs. Returns scalar metrics; the `rollout_ratio_*`
    ones (see `importance_ratio_stats`) cover this rank's shard only and cost one extra forward pass
    (`trainer.log_importance_ratio`; free when `recompute_old_log_probs` is on). With `trainer.rollout_is` the
    loss takes truncated importance weights (`rollout_is_weights`; metrics `rollout_is_*`).
    """
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.utils import tensordict_utils as tu

    started = time.perf_counter()
    global_batch_size = global_batch_size or len(batch)
    batch = DataProto(
        batch=batch.batch.clone(),
        non_tensor_batch=dict(batch.non_tensor_batch),
        meta_info=dict(batch.meta_info),
    )
    ratio_metrics: dict[str, float] = {}
    if cfg.recompute_old_log_probs or cfg.log_importance_ratio:
        current = compute_log_probs(policy, batch)["log_probs"]  # this policy, before the update
        rollout = batch.batch["old_log_probs"]  # the sampling policy's (build_grpo_batch)
        ratio_metrics = importance_ratio_stats(current, rollout, batch.batch["response_mask"])
        if cfg.rollout_is:
            # Off-policy correction: PPO's ratio is taken against the trainer's own log-probs (below), and each
            # token's loss is weighted by how much likelier the trainer's policy makes it than the sampler did.
            weights, is_metrics = rollout_is_weights(current, rollout, batch.batch["response_mask"],
                                                     cfg.rollout_is_cap)
            batch.batch["rollout_is_weights"] = weights
            ratio_metrics.update(is_metrics)
        if cfg.recompute_old_log_probs:
            batch.batch["old_log_probs"] = current
    if cfg.use_kl_loss:
        if reference is None:
            raise ValueError("trainer.use_kl_loss=true needs a reference worker (create_reference_worker)")
        batch.batch["ref_log_prob"] = compute_log_probs(reference, batch)["log_probs"]

    mini_batch_size = cfg.mini_batch_size or global_batch_size
    td = to_engine_input(batch)
    tu.assign_non_tensor(
        td,
        # Entropy is always computed: it is a metric to watch even with entropy_coeff = 0.
        calculate_entropy=True,
        global_batch_size=mini_batch_size,
        mini_batch_size=mini_batch_size,
        epochs=cfg.ppo_epochs,
        seed=cfg.seed,
        dataloader_kwargs={"shuffle": False},
        compute_loss=True,
    )
    output = policy.train_mini_batch(td)
    raw = tu.get(output, "metrics")

    metrics = {
        "loss": _mean(raw["loss"]),
        "pg_loss": _mean(raw["actor/pg_loss"]),
        "pg_clipfrac": _mean(raw["actor/pg_clipfrac"]),
        "pg_clipfrac_lower": _mean(raw["actor/pg_clipfrac_lower"]),  # dual-clip (negative advantages)
        "ppo_kl": _mean(raw["actor/ppo_kl"]),  # KL(old || current), how far this update moved
        "entropy": _mean(raw["actor/entropy_loss"]),  # token-mean entropy (verl names it entropy_loss)
        "grad_norm": _mean(raw["grad_norm"]),
        "lr": _mean(raw["lr"]),
        "num_mini_batches": float(len(raw["grad_norm"])) if isinstance(raw["grad_norm"], list) else 1.0,
    }
    if cfg.use_kl_loss:
        metrics["kl"] = _mean(raw["kl_loss"])  # low_var_kl(current || reference), token-mean
    metrics.update(ratio_metrics)
    metrics["step_time_s"] = time.perf_counter() - started
    # verl skips the optimizer step when the grad norm is not finite; say so instead of hiding it in a number.
    metrics["update_skipped"] = float(not math.isfinite(metrics["grad_norm"]))
    return metrics


def export_policy_weights(worker, dtype: str | torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The policy's full (unsharded) weights on CPU, named as in the HF checkpoint, for weight sync; floating
    tensors cast to `dtype` when given (what travels to the engines: bf16 is half the fp32 master copy).

    A collective over the trainer ranks: every rank must call it; each gets the full state dict.
    """

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    per_tensor, _peft_config = worker.engine.get_per_tensor_param()
    return {name: to_wire(tensor, dtype).to("cpu", copy=True) for name, tensor in per_tensor}


def policy_weight_meta(worker, dtype: str | torch.dtype | None = None):
    """Names, wire dtypes and full shapes of what `get_per_tensor_param` yields, in its order, without gathering
    anything (the FSDP2 state dict's DTensors know their global shapes; names converted as verl converts them).
    The NCCL receivers allocate from it before the broadcast starts (pipeline/rollout/weight_sync.py)."""
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.utils.model import convert_weight_keys


    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    module = worker.engine.module
    params = convert_weight_keys(module.state_dict(), getattr(module, "_fsdp_wrapped_module", module))
    return weight_meta(((name, p.shape, p.dtype) for name, p in params.items()), dtype)


__all__ = [
    "build_actor_loss_config",
    "build_model_config",
    "build_training_worker_config",
    "compute_log_probs",
    "create_policy_worker",
    "create_reference_worker",
    "export_policy_weights",
    "grpo_update",
    "importance_ratio_stats",
    "policy_weight_meta",
    "rollout_is_weights",
]
