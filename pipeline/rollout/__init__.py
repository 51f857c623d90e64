"""The rollout seam: turn prompts (Samples with an image) into n sampled responses each.

One interface (`Rollout`, in base.py) and two backends chosen by `rollout.backend` through `make_rollout`:
`hf` (transformers generate; CPU and GPU) and `vllm` (GPU). Both build their Samples with the same functions
(base.py): response text and token ids, per-token log-probs under the sampling policy, and the policy version.
"""

from pipeline.rollout.base import Rollout, RolloutUnavailable, make_rollout
from pipeline.rollout.hf import HFRollout

__all__ = ["HFRollout", "Rollout", "RolloutUnavailable", "make_rollout"]
