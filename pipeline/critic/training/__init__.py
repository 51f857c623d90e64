"""Supervised fine-tuning of the critic (Visual-ERM) on a critic SFT set, with DeepSpeed.

`config.py` the settings; `sft.py` one rank's training loop (no Ray); `launch.py` one rank in a subprocess
(`train_local`); `actors/critic_trainer.py` the Ray worker group (`train_on_ray`).
"""

from pipeline.critic.training.config import CriticTrainConfig, load_train_config

__all__ = ["CriticTrainConfig", "load_train_config"]
