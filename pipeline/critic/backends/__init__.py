"""Reward-model backends behind one interface (`RewardBackend.score`), chosen by `reward.backend`."""

from __future__ import annotations

from pipeline.critic.backends.base import (
    BackendUnavailable,
    JudgeRequest,
    RawAnswer,
    RewardBackend,
    TextRequest,
)
from pipeline.critic.backends.fingerprint import FingerprintBackend
from pipeline.critic.backends.vllm import VLLMBackend
from pipeline.critic.config import RewardConfig
from pipeline.models.config import ModelConfig


def make_backend(cfg: RewardConfig, model_cfg: ModelConfig | None = None) -> RewardBackend:
    """The backend `cfg.backend` names; `model_cfg` is the local critic checkpoint the hf and vllm backends
    load (a tiny one built beforehand by the entry point: `pipeline.tiny.ensure_models`)."""
    if cfg.backend in ("hf", "vllm") and model_cfg is None:
        raise ValueError(f"reward.backend={cfg.backend} loads a local critic: give its checkpoint (models.reward)")
    if cfg.backend == "hf":
        from pipeline.critic.backends.hf import HFBackend  # heavy: pulls in xgrammar

        return HFBackend(cfg, model_cfg)
    if cfg.backend == "vllm":

        return VLLMBackend(cfg, model_cfg)
    if cfg.backend == "openai":
        from pipeline.critic.backends.openai import OpenAIBackend  # heavy: pulls in httpx

        return OpenAIBackend(cfg)
    if cfg.backend == "structural":
        from pipeline.critic.backends.structural import StructuralBackend  # heavy: the chart interpreter

        return StructuralBackend(cfg)
    if cfg.backend == "fingerprint":

        return FingerprintBackend(cfg, cfg.fingerprint.delay_ms_per_call / 1000, cfg.fingerprint.delay_ms_per_pair / 1000,
                                  engine_error_rate=cfg.fingerprint.engine_error_rate)
    raise ValueError(f"unknown reward backend {cfg.backend!r}")


__all__ = ["BackendUnavailable", "JudgeRequest", "RawAnswer", "RewardBackend", "TextRequest", "make_backend"]
