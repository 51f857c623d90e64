"""The rollout seam: turn prompts (Samples with an image) into n sampled responses each.

One interface (`Rollout`, in base.py) and two backends chosen by `rollout.backend` through `make_rollout`:
`hf` (transformers generate; CPU and GPU) and `vllm` (GPU). Both build their Samples with the same functions
(base.py): response text and token ids, per-token log-probs under the sampling policy, and the policy version.
"""

from __future__ import annotations

from pipeline.models.config import ModelsConfig
from pipeline.rollout.base import Rollout, RolloutUnavailable
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.hf import HFRollout


def make_rollout(models: ModelsConfig, rollout: RolloutConfig, device: str, seed: int) -> Rollout:
    """The backend `rollout.backend` names, built for `models.policy` (a local checkpoint directory)."""
    if rollout.backend == "hf":
        return HFRollout(models, rollout.sampling, device=device, seed=seed)
    if rollout.backend == "vllm":
        from pipeline.rollout.vllm import VLLMRollout  # vLLM: an optional extra, GPU machines only

        return VLLMRollout(models, rollout.sampling, rollout.vllm, seed=seed, timeout_s=rollout.timeout_s)
    raise ValueError(f"unknown rollout backend {rollout.backend!r} (hf, vllm)")


__all__ = ["HFRollout", "Rollout", "RolloutUnavailable", "make_rollout"]
