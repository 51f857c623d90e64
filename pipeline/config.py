"""Typed run configuration: YAML presets in configs/, validated by pydantic, overridable as `a.b.c=value`.

Everything a run does is decided here, so mistakes must surface before Ray starts: an unknown key, a wrong
type or a missing file raises `ConfigError` whose message names the key's full dotted path. Each section's
schema lives beside its component (`pipeline/models/config.py`, `pipeline/rollout/config.py`, ...); this module
assembles them into the run's `Config` and checks what no single section can. The loading rules (keys checked
by path, overrides, merge onto the defaults) are `pipeline.schema.load_section`'s, shared by every tool.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field

from pipeline.critic.config import RewardConfig
from pipeline.data.config import DataConfig, DatasetConfig  # noqa: F401 - DataConfig: re-exported
from pipeline.loop.config import StreamConfig
from pipeline.models.config import (  # noqa: F401 - the tiny sections: re-exported for tools and tests
    ModelConfig,
    ModelsConfig,
    TinyCriticTrainConfig,
    TinyModelConfig,
    TinyTextConfig,
    TinyVisionConfig,
    TinyWarmStartConfig,
)
from pipeline.render.config import RenderConfig
from pipeline.revision import RevisionConfig
from pipeline.rollout.config import RolloutConfig, SamplingConfig, VLLMRolloutConfig  # noqa: F401
from pipeline.runlog.config import LoggingConfig, WandbConfig  # noqa: F401
from pipeline.schema import (  # noqa: F401 - load_section, read_yaml_mapping: re-exported
    ConfigError,
    Strict,
    deep_merge,
    load_section,
    read_section_data,
    read_yaml_mapping,
    validate,
)
from pipeline.training.config import TrainerConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"




# ---------------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------------
class RunConfig(Strict):
    name: str = "embedded-default"
    output_dir: str = "runs"  # the run writes to <output_dir>/<name>
    seed: int = 0
    total_steps: int = Field(3, ge=0)  # GRPO updates
    eval_every_steps: int = Field(0, ge=0)  # evaluate on the held-out split every K updates (0 = only at the end)
    # Held-out evaluation also revises each answer with the critic's feedback this many rounds
    # (pipeline/revision.py; metrics per round under eval/revision/round<k>/...). 0 = first answers only.
    eval_revision_rounds: int = Field(0, ge=0)
    eval_at_start: bool = False  # also evaluate before the first update (the baseline a run moves from)


class RenderPoolConfig(RenderConfig):
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)  # one zygote per whole CPU (at least one)
    # Ray node label `ray.io/node-group` (a KubeRay worker group name) the actors must run on; None = any node.
    node_group: Optional[str] = None


class RayConfig(Strict):
    # None: use $RAY_ADDRESS, else join a running cluster if one is found, else start a local one.
    address: Optional[str] = None
    # Size of a local cluster started by the driver; None = all cores of this machine.
    num_cpus: Optional[int] = Field(None, ge=1)
    num_gpus: Optional[int] = Field(None, ge=0)
    init_timeout_s: float = Field(120.0, gt=0)
    # How long to wait for an actor to come up before declaring the placement impossible.
    actor_start_timeout_s: float = Field(120.0, gt=0)


class ChaosConfig(Strict):
    """Fault injection (actors/chaos.py): kill actors of these kinds during the run, to prove it survives."""

    kinds: list[Literal["rollout", "render", "reward", "trainer"]] = []  # [] = no faults injected
    kills_per_kind: int = Field(1, ge=0)
    first_after_s: float = Field(5.0, ge=0)  # after the stream starts
    interval_s: float = Field(10.0, gt=0)
    seed: int = 0


class Config(Strict):
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    models: ModelsConfig = ModelsConfig()
    data: DatasetConfig = DatasetConfig()
    rollout: RolloutConfig = RolloutConfig()
    render: RenderPoolConfig = RenderPoolConfig()
    reward: RewardConfig = RewardConfig()
    trainer: TrainerConfig = TrainerConfig()
    stream: StreamConfig = StreamConfig()
    revision: RevisionConfig = RevisionConfig()
    chaos: ChaosConfig = ChaosConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def run_dir(self) -> Path:
        return Path(os.path.expanduser(self.run.output_dir)) / self.run.name


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------
def load_config(path: Union[str, Path, None] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Read a YAML preset (default: configs/default.yaml), apply `a.b.c=value` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        # A bare preset name ("default") is looked up in configs/.
        candidate = CONFIG_DIR / f"{path}.yaml" if path.suffix == "" else None
        if candidate is None or not candidate.is_file():
            raise ConfigError(f"config file not found: {path}")
        path = candidate
    data = read_section_data(Config, path, overrides)
    # Merged onto the full default tree: a partial section (`table: {sampling: {max_new_tokens: 256}}`) keeps
    # every default it does not mention, including defaults that differ per parent (tables sample greedily).
    cfg = validate(Config, deep_merge(Config().model_dump(mode="json"), data), source=str(path))
    _derive_trainer_temperature(cfg, explicit=(data.get("trainer") or {}).get("temperature"))
    _check_across_sections(cfg)
    return cfg


def _check_across_sections(cfg: Config) -> None:
    """Combinations no single section can check, which would otherwise fail only after minutes of start-up."""
    critic = cfg.models.reward
    if critic.path == "tiny" and critic.tiny.train.steps and cfg.reward.uses_judge() \
            and cfg.reward.limits != critic.tiny.train.limits:
        raise ConfigError(
            f"reward.limits ({cfg.reward.limits.model_dump()}) differ from the limits the tiny critic is trained "
            f"under (models.reward.tiny.train.limits = {critic.tiny.train.limits.model_dump()}): set both alike")
    t, r = cfg.trainer, cfg.rollout
    if r.weight_sync == "nccl" and t.num_gpus_per_rank <= 0:
        raise ConfigError("rollout.weight_sync=nccl needs GPU trainer ranks (trainer.num_gpus_per_rank > 0)")
    if r.vllm.enable_sleep_mode and cfg.stream.max_staleness != 0:
        raise ConfigError("rollout.vllm.enable_sleep_mode (engines colocated with the trainer) needs "
                          "stream.max_staleness=0: the engines sleep while the trainer updates")
    # verl splits each step's samples into mini-batches (one optimizer step each), shards a mini-batch over
    # the ranks and walks each shard in micro-batches; each split must be exact.
    # (a training episode with revision rounds adds one revised answer per sample and round)
    samples = cfg.data.prompts_per_step * r.sampling.n * (1 + r.revision_rounds)
    mini = t.mini_batch_size or samples
    where = (f"data.prompts_per_step × rollout.sampling.n × (1 + rollout.revision_rounds) = {samples} samples per "
             f"step, trainer.mini_batch_size "
             f"= {mini}, trainer.ranks = {t.ranks}, trainer.micro_batch_size_per_device = "
             f"{t.micro_batch_size_per_device}")
    if samples % mini or mini % t.ranks or (mini // t.ranks) % t.micro_batch_size_per_device:
        raise ConfigError(f"the trainer's batches do not split evenly ({where}): the samples per step must be a "
                          "multiple of the mini-batch, the mini-batch of the ranks, and each rank's share of the "
                          "micro-batch")


def _derive_trainer_temperature(cfg: Config, explicit: Any) -> None:
    """The trainer scores responses at the temperature they were sampled at (verl divides logits by it), so
    it is the rollout's, set once; greedy rollouts report log-probs at temperature 1."""
    sampled_at = cfg.rollout.sampling.temperature or 1.0
    if explicit is not None and float(explicit) != sampled_at:
        raise ConfigError(
            f"trainer.temperature ({explicit}) differs from the rollout's sampling temperature ({sampled_at}): "
            "log-probs would be computed at another temperature than sampled. Set rollout.sampling.temperature "
            "only; trainer.temperature follows it."
        )
    cfg.trainer.temperature = sampled_at


def config_to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


def dump_resolved(cfg: Config, source: Optional[str] = None) -> str:
    """The fully resolved config as YAML (`pipeline/main.py --print-config`): every key, defaults and derived
    values included, in schema order; loading it back (`--config FILE`) gives the same config."""
    header = f"# resolved from {source}\n" if source else "# resolved configuration\n"
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, width=110)
