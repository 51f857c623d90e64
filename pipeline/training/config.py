"""Trainer settings: one GRPO update of the policy through verl's FSDP2 engine.

Defaults follow the Visual-ERM paper's RL recipe (lr 1e-6, KL loss 0.01 low_var_kl, entropy 0, token-mean) and
this machine's constraints (fp32 on CPU, SDPA attention, padded batches). GPU presets override
`param_dtype: bfloat16`, `attn_implementation: flash_attention_2` and `use_remove_padding: true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.schema import Strict


class TrainerConfig(Strict):
    # --- optimizer (verl FSDPOptimizerConfig) ---
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = Field(1.0, gt=0)  # max global grad norm
    lr_warmup_steps: int = Field(0, ge=0)
    total_training_steps: int = Field(-1, ge=-1)  # only needed by schedules other than "constant"
    lr_scheduler_type: Literal["constant", "cosine"] = "constant"

    # --- policy loss (verl ActorConfig, consumed by verl.workers.utils.losses.ppo_loss) ---
    policy_loss: Literal["vanilla"] = "vanilla"  # PPO-clip; the name verl's get_policy_loss_fn registry uses
    clip_ratio_low: float = Field(0.2, ge=0)
    clip_ratio_high: float = Field(0.2, ge=0)
    clip_ratio_c: float = Field(3.0, gt=1)  # dual-clip bound for negative advantages
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"] = "token-mean"
    use_kl_loss: bool = True  # KL to the reference policy as a loss term (needs a reference worker)
    kl_loss_coef: float = Field(0.01, ge=0)
    kl_loss_type: Literal["low_var_kl", "kl", "abs", "mse"] = "low_var_kl"
    entropy_coeff: float = Field(0.0, ge=0)

    # --- GRPO advantages (verl core_algos "grpo" estimator) ---
    norm_adv_by_std_in_grpo: bool = True  # False = Dr.GRPO

    # --- batching ---
    # Samples per forward/backward pass on one rank (gradient accumulation covers the rest of the batch).
    micro_batch_size_per_device: int = Field(2, ge=1)
    # Samples per forward-only pass on one rank (reference log-probs, recomputed old log-probs); None = the
    # training micro-batch. No activations are kept for a backward pass there, so it can be several times larger.
    infer_micro_batch_size_per_device: int | None = Field(None, ge=1)
    # Samples per optimizer step over all ranks; None = the whole batch handed to one update (one step).
    mini_batch_size: int | None = Field(None, ge=1)
    ppo_epochs: int = Field(1, ge=1)
    # Derived by load_config from rollout.sampling.temperature (log-probs are computed on logits / the
    # temperature the responses were sampled at); setting it to another value is a config error.
    temperature: float = Field(1.0, gt=0)
    # True: old log-probs are recomputed by the trainer before the update (needed when rollout numerics differ
    # from the trainer's, e.g. vLLM bf16 vs FSDP); False: the rollout's own log-probs are used.
    recompute_old_log_probs: bool = False
    # Log pi_trainer / pi_rollout per token before each update (rollout_ratio_* metrics): one extra forward pass.
    log_importance_ratio: bool = True
    # Off-policy correction (truncated importance sampling, verl's `rollout_is_weights`): the rollout's
    # log-probs differ from the trainer's when rollouts are up to `stream.max_staleness` versions old, or come
    # from another engine (vLLM bf16 vs FSDP). Each token's PPO loss is then weighted by
    # min(pi_trainer / pi_rollout, rollout_is_cap), pi_trainer the recomputed old log-probs: needs
    # recompute_old_log_probs. Metrics: rollout_is_weight_mean, rollout_is_clipped_frac (tokens the cap cut).
    rollout_is: bool = False
    rollout_is_cap: float = Field(2.0, gt=1)  # verl's default rollout_is_threshold

    # --- engine (verl FSDPEngineConfig / HFModelConfig) ---
    strategy: Literal["fsdp2"] = "fsdp2"  # FSDP1 does not run on CPU
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # FSDP2 mixed-precision compute dtype
    # CPU: "sdpa" (flash-attn is CUDA-only). GPU: "flash_attention_2".
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # Pack the micro-batch into one sequence instead of padding it (verl's rmpad path). transformers keeps the
    # packed samples apart from the restarting position ids (with SDPA too: same log-probs as padded, checked
    # on the tiny model). The padded path is the default on CPU because it is the one the tests cover.
    use_remove_padding: bool = False
    gradient_checkpointing: bool = False
    fsdp_size: int = -1  # -1: shard over all ranks
    seed: int = 0

    # --- worker group (actors/trainer.py): one Ray actor per FSDP rank ---
    ranks: int = Field(1, ge=1)
    num_cpus_per_rank: float = Field(1.0, gt=0)
    # > 0: the ranks run on GPUs with nccl (verl's NVIDIA platform); 0: CPU with gloo (our verl CPU platform).
    num_gpus_per_rank: float = Field(0.0, ge=0)
    # Ray node label `ray.io/node-group` (a KubeRay worker group name) the ranks must run on; None = any node.
    node_group: str | None = None
    # torch intra-op threads per rank; None = max(1, int(num_cpus_per_rank)). Oversubscribed BLAS threads crawl.
    threads_per_rank: int | None = Field(None, ge=1)
    # Rank start: process, imports, rendezvous, engine build (an 8B model load takes minutes).
    start_timeout_s: float = Field(600.0, gt=0)
    # Every other call on the ranks: one update, a weight export, a checkpoint save or load.
    call_timeout_s: float = Field(600.0, gt=0)
    # gloo / nccl collective timeout inside the ranks.
    collective_timeout_s: float = Field(600.0, gt=0)

    # --- checkpoints (pipeline/training/checkpoint.py) ---
    # The driver saves every K updates (0 = never) to <run_dir>/checkpoints/step_<N>/ and keeps the newest
    # `keep_checkpoints` complete ones (None = all).
    save_every_steps: int = Field(0, ge=0)
    keep_checkpoints: int | None = Field(None, ge=1)
    # Resume from <run_dir>/checkpoints/latest when there is one.
    resume: bool = True

    @model_validator(mode="after")
    def _check_rollout_is(self) -> TrainerConfig:
        if self.rollout_is and not self.recompute_old_log_probs:
            raise ValueError("trainer.rollout_is weights the loss by pi_trainer / pi_rollout: it needs "
                             "trainer.recompute_old_log_probs=true (without it PPO's old log-probs are the "
                             "rollout's and the weights would be 1)")
        return self
    # A rank that dies or hangs mid-run: the driver restarts the whole group from the latest checkpoint (the
    # stream rewinds to its loader position) at most this many times per run; one more failure ends the run.
    max_restarts: int = Field(2, ge=0)
