"""Reward-model backends behind one interface (`RewardBackend.score`), chosen by `reward.backend`."""

from __future__ import annotations

from pipeline.config import ModelConfig
from pipeline.critic.backends.base import (
    BackendUnavailable, JudgeRequest, RawAnswer, RewardBackend, TextRequest,
)
from pipeline.critic.config import RewardConfig


def make_backend(cfg: RewardConfig, model_cfg: ModelConfig | None = None,
                 cache_dir: str = "~/.cache/visual-erm-rl/models") -> RewardBackend:
    if cfg.backend == "hf":
        from pipeline.critic.backends.hf import HFBackend

        return HFBackend(cfg, model_cfg or ModelConfig(), cache_dir)
    if cfg.backend == "vllm":
        from pipeline.critic.backends.vllm import VLLMBackend

        return VLLMBackend(cfg, model_cfg or ModelConfig(), cache_dir)
    if cfg.backend == "openai":
        from pipeline.critic.backends.openai import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.backend == "fingerprint":
        from pipeline.critic.backends.fingerprint import FingerprintBackend

        return FingerprintBackend(cfg, cfg.fingerprint.delay_ms_per_call / 1000, cfg.fingerprint.delay_ms_per_pair / 1000,
                                  engine_error_rate=cfg.fingerprint.engine_error_rate)
    raise ValueError(f"unknown reward backend {cfg.backend!r}")


__all__ = ["BackendUnavailable", "JudgeRequest", "RawAnswer", "RewardBackend", "TextRequest", "make_backend"]
