"""The critic (Visual-ERM): prompts and answer schemas, judgement parsing, backends (HF + xgrammar, vLLM,
OpenAI-compatible endpoints), the scorer that turns rendered samples into rewards (`pipeline.rewards` holds
the formulas), and the critic's own training: SFT data from the data engine (`data_builder.py`, format in
`dataset.py`), teachers (`teachers.py`, `structural/`), DeepSpeed SFT (`training/`), baselines.
CLI: `python -m pipeline.critic {judge,data,train}`."""

from pipeline.critic.config import RewardConfig
from pipeline.critic.judgement import Judgement, parse_judgement
from pipeline.critic.schema import json_schema, judgement_model
from pipeline.sample import CATEGORIES

__all__ = ["CATEGORIES", "Judgement", "RewardConfig", "json_schema", "judgement_model", "parse_judgement"]
