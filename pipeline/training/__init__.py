"""GRPO training of the policy through verl's FSDP2 engine (pure logic: no Ray imports).

- `config.TrainerConfig`: the `trainer:` section of the run config.
- `batch`: GRPO groups of one-image rollouts → verl's DataProto / engine TensorDict (M-RoPE, advantages).
- `engine`: verl TrainingWorker configs, policy / reference workers, log-probs, one GRPO update.
- `rank.RankTrainer`: everything one FSDP rank does (setup, update, weight export, checkpoint save/load);
  `actors/trainer.py` wraps it in a Ray actor per rank and drives the ranks with `TrainerGroup`.
- `checkpoint`: the <run_dir>/checkpoints/step_<N>/ layout and the crash-safe commit (`latest` written last).
- `metrics`: per-rank metrics combined into one dict per update; batch statistics.

On CPU, a process calls `pipeline.training.verl_platform.prepare_process_for_verl_cpu` before creating workers.
"""

from pipeline.training.config import TrainerConfig

__all__ = ["TrainerConfig"]
