"""The critic (Visual-ERM), in one package.

Serving: prompts (`prompts.py`), the answer schema and formats (`schema.py`, `config.py`), judgement parsing
(`judgement.py`), images (`images.py`), backends (`backends/`: HF + xgrammar, vLLM, OpenAI-compatible
endpoints), the micro-batcher and the scorer that turns rendered samples into rewards (`pipeline.rewards` holds
the formulas), baselines (`baselines.py`). `structural/` diffs two programs exactly: the teacher of natural
errors and an oracle. Training (`training/`): SFT data from the data engine (`data_builder.py`, format in
`dataset.py`, `teachers.py`) and DeepSpeed SFT (`sft.py`, `launch.py`). Serving never imports training.
CLI: `python -m pipeline.critic {judge,data,train}`."""

from pipeline.critic.config import RewardConfig
from pipeline.critic.judgement import Judgement, parse_judgement
from pipeline.critic.schema import json_schema, judgement_model
from pipeline.sample import CATEGORIES

__all__ = ["CATEGORIES", "Judgement", "RewardConfig", "json_schema", "judgement_model", "parse_judgement"]
