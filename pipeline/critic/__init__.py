"""Reward service: Visual-ERM prompts and answer schemas, reward-model backends (HF + xgrammar, vLLM,
OpenAI-compatible endpoints), and the scorer that turns rendered samples into rewards (`pipeline.rewards`).
CLI: `python -m pipeline.critic {chart,table,svg} --ref REF.png --pred PRED.png [--code FILE]`."""

from pipeline.critic.config import RewardConfig
from pipeline.critic.judgement import Judgement, parse_judgement
from pipeline.critic.schema import CATEGORIES, json_schema, judgement_model

__all__ = ["CATEGORIES", "Judgement", "RewardConfig", "json_schema", "judgement_model", "parse_judgement"]
