"""vLLM backend (GPU-only optional extra). Where vLLM is absent the real-engine test skips with the reason;
the absence itself must surface as BackendUnavailable (a clear message), never an ImportError deep inside."""

import pytest

from pipeline.critic.backends.base import BackendUnavailable
from pipeline.critic.backends.vllm import vllm_available
from pipeline.critic.config import RewardConfig
from pipeline.critic.testing import random_samples, tiny_reward_config

HAVE_VLLM, WHY = vllm_available()


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed: the missing-vLLM path cannot be exercised here")
def test_missing_vllm_is_a_clear_backend_unavailable(models_cfg):
    from pipeline.critic.backends import make_backend

    with pytest.raises(BackendUnavailable, match="GPU-only optional extra"):
        make_backend(RewardConfig(backend="vllm"), models_cfg.reward, models_cfg.cache_dir)


@pytest.mark.skipif(not HAVE_VLLM, reason=WHY or "vLLM not installed")
def test_vllm_backend_gives_schema_valid_judgements(models_cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM is installed but no GPU is visible")
    from pipeline.critic.scorer import RewardScorer, prepare_models

    cfg = tiny_reward_config(backend="vllm", vllm={"gpu_memory_utilization": 0.2, "max_model_len": 2048,
                                                   "enforce_eager": True})
    scorer = RewardScorer(cfg, prepare_models(models_cfg))
    try:
        samples = random_samples(30, seed=21)
        stats = scorer.score(samples)
    finally:
        scorer.close()
    assert stats["invalid_judgements"] == 0
    assert all(s.extra["judgement"]["valid"] and s.reward is not None for s in samples)
