"""Trainer metrics: combine what the ranks report into one dict per update, plus batch statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from verl import DataProto

# Global already (verl all-reduces them, or they are the same on every rank): taken from rank 0.
GLOBAL_KEYS = ("loss", "grad_norm", "lr", "num_mini_batches", "update_skipped")
# Means over this rank's tokens: combined as a token-weighted mean over ranks.
TOKEN_MEAN_KEYS = (
    "pg_loss",
    "pg_clipfrac",
    "pg_clipfrac_lower",
    "ppo_kl",
    "entropy",
    "kl",
    "rollout_ratio_mean",
    "rollout_log_prob_abs_diff",
    "rollout_is_weight_mean",
    "rollout_is_clipped_frac",
)


def combine_rank_metrics(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """One metrics dict for the update: rank 0's global values, token-weighted means, extremes over ranks."""
    if not per_rank:
        raise ValueError("no rank metrics")
    first = per_rank[0]
    combined = {k: v for k, v in first.items() if k in GLOBAL_KEYS}
    tokens = np.array([m.get("response_tokens", 0.0) for m in per_rank], dtype=np.float64)
    weights = tokens / tokens.sum() if tokens.sum() > 0 else np.full(len(per_rank), 1 / len(per_rank))
    for key in TOKEN_MEAN_KEYS:
        if all(key in m for m in per_rank):
            combined[key] = float(sum(w * m[key] for w, m in zip(weights, per_rank)))
    if all("rollout_ratio_min" in m for m in per_rank):
        combined["rollout_ratio_min"] = min(m["rollout_ratio_min"] for m in per_rank)
        combined["rollout_ratio_max"] = max(m["rollout_ratio_max"] for m in per_rank)
    combined["response_tokens"] = float(tokens.sum())
    # The slowest rank sets the pace of a synchronous update.
    combined["step_time_s"] = max(m.get("step_time_s", 0.0) for m in per_rank)
    return combined


def batch_stats(batch: DataProto) -> dict[str, float]:
    """Rewards and lengths of a batch from `build_grpo_batch`, and how many groups carry no signal."""
    rewards = batch.batch["token_level_rewards"].sum(dim=1).double().numpy()
    lengths = batch.batch["response_mask"].sum(dim=1).double().numpy()
    groups = batch.non_tensor_batch["group_id"]
    flat_groups = sum(1 for g in set(groups) if np.ptp(rewards[groups == g]) == 0)
    n_groups = len(set(groups))
    return {
        "batch_size": float(len(rewards)),
        "num_groups": float(n_groups),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "response_length_mean": float(lengths.mean()),
        # Responses with a vision special token (masked out of the update; failures/vision_token per step).
        "vision_token_samples": float(np.sum(batch.non_tensor_batch.get("vision_token", np.zeros(0, bool)))),
        # All members scored alike: zero advantage, the group teaches nothing.
        "zero_advantage_group_frac": flat_groups / n_groups,
    }


__all__ = ["GLOBAL_KEYS", "TOKEN_MEAN_KEYS", "batch_stats", "combine_rank_metrics"]
