"""Typed run configuration: YAML presets in configs/, validated by pydantic, overridable as `a.b.c=value`.

Everything a run does is decided here, so mistakes must surface before Ray starts: an unknown key, a wrong
type or a missing file raises `ConfigError` whose message names the key's full dotted path.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.data.config import DataConfig
from pipeline.render.config import RenderConfig
from pipeline.critic.config import JudgementLimits, RewardConfig
from pipeline.schema import ConfigError, Strict
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


class DatasetConfig(Strict):
    """Prompts: local verl-style parquet files, or (when none are given) a synthetic set made at start-up."""

    train_paths: list[str] = []  # parquet files or directories of them
    cache_dir: str = "~/.cache/visual-erm-rl/data"  # where the synthetic set is rendered once and kept
    eval_paths: list[str] = []
    tasks: list[Literal["chart", "table", "svg"]] = ["chart", "table", "svg"]  # synthetic set only
    synth_train_per_task: int = Field(16, ge=1)
    synth_eval_per_task: int = Field(2, ge=0)
    synth: DataConfig = DataConfig()
    prompts_per_step: int = Field(4, ge=1)  # GRPO groups per update


class RevisionConfig(Strict):
    """How an answer is revised with the critic's feedback (pipeline/revision.py), at test time and in training."""

    keep: Literal["best", "last"] = "best"  # test time: the answer kept, by critic reward (ties: the earlier)
    stop_when_clean: bool = True  # no more rounds once the critic lists nothing for a rendered answer
    max_listed: int = Field(8, ge=1)  # discrepancies shown in the feedback, most severe first


class StreamConfig(Strict):
    # Rollouts may run this many policy versions ahead of the trainer; 0 = synchronous (generate, then train).
    max_staleness: int = Field(1, ge=0)
    chunk_size: int = Field(4, ge=1)  # samples handed from stage to stage at a time
    queue_size: int = Field(8, ge=1)  # chunks waiting between two stages (backpressure beyond that)
    render_threads: int = Field(2, ge=1)  # concurrent render calls from the driver
    reward_threads: int = Field(1, ge=1)
    step_timeout_s: float = Field(1800.0, gt=0)  # one step's groups must complete within this


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


class TinyVisionConfig(Strict):
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 64  # must equal the text hidden size


class TinyTextConfig(Strict):
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    max_position_embeddings: int = 4096


class TinyWarmStartConfig(Strict):
    """Supervised warm start of a tiny model at build time (pipeline/models/warm_start.py): teacher-forced
    SFT on compact synthetic (image, code) pairs, so a tiny policy renders some of its samples and GRPO groups
    carry a reward signal. steps: 0 keeps the plain random model (the tiny reward model's setting)."""

    steps: int = Field(0, ge=0)
    examples_per_task: int = Field(48, ge=1)  # compact programs rendered per task kind
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=1)
    # Revision examples (pipeline/models/warm_start.py): a targeted edit of a compact program is a free
    # (broken code, its rendering, exact discrepancies → correct code) revision turn; this many per task kind.
    revision_examples_per_task: int = Field(0, ge=0)


TINY_CRITIC_STEPS = 300  # the embedded default's tiny critic SFT steps (≈2 CPU-minutes; see pipeline/critic/tiny.py)


class TinyCriticTrainConfig(Strict):
    """Supervised training of a tiny *critic* at build time (reward model only): a critic SFT set is built
    from the project's data engine (`pipeline/critic/data_builder.py`: targeted edits, clean pairs, the
    default tiny policy's natural errors labelled by the structural teacher) and the random tiny model is
    fine-tuned on it with DeepSpeed (`pipeline/critic/training`), once, cached by config hash.
    steps: 0 keeps the plain random model."""

    steps: int = Field(0, ge=0)
    edits_per_task: int = Field(100, ge=0)
    clean_per_task: int = Field(20, ge=0)
    natural_per_task: int = Field(20, ge=0)
    micro_batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    seed: int = 0
    # The answer bounds the critic is trained to write within; `reward.limits` must be the same (checked at
    # start-up), or the served answers would be cut where the trained ones were not.
    limits: JudgementLimits = JudgementLimits(max_errors=4, max_location_chars=48, max_description_chars=96)


class TinyModelConfig(Strict):
    """A random Qwen3-VL built offline. Sizes are kept tiny so CPU tests run in seconds."""

    text: TinyTextConfig = TinyTextConfig()
    vision: TinyVisionConfig = TinyVisionConfig()
    # Upper bound for the byte-level BPE trained on our own code corpus (it stops earlier when the corpus
    # offers no more merges: ~1.8k with Qwen's digit-by-digit split).
    vocab_size: int = Field(4096, ge=512)
    seed: int = 0
    # Processor image budget: tiny models see small images (pixels = tokens * (patch*merge)^2).
    min_pixels: int = 32 * 32
    max_pixels: int = 128 * 128
    warm_start: TinyWarmStartConfig = TinyWarmStartConfig()
    train: TinyCriticTrainConfig = TinyCriticTrainConfig()  # critic SFT (the reward model's tiny only)


class ModelConfig(Strict):
    # "tiny" builds a random Qwen3-VL from `tiny`; anything else is a local HF checkpoint directory
    # (e.g. Qwen3-VL-8B-Instruct or Visual-ERM-8B) loaded unchanged by the same function.
    path: str = "tiny"
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class ModelsConfig(Strict):
    cache_dir: str = "~/.cache/visual-erm-rl/models"
    # The tiny policy is warm-started (~1 min, once, cached) so the embedded default's GRPO groups carry a
    # signal; the tiny reward model is a trained critic (data engine → DeepSpeed SFT, once, cached; see
    # pipeline/critic/tiny.py), so wrong renderings get discrepancies listed. `reward.tiny.train.steps=0`
    # keeps the random one.
    policy: ModelConfig = ModelConfig(tiny=TinyModelConfig(warm_start=TinyWarmStartConfig(
        steps=300, revision_examples_per_task=16)))
    reward: ModelConfig = ModelConfig(tiny=TinyModelConfig(seed=1, train=TinyCriticTrainConfig(steps=TINY_CRITIC_STEPS)))

    @model_validator(mode="after")
    def _roles(self) -> ModelsConfig:
        if self.policy.tiny.train.steps:
            raise ValueError("models.policy.tiny.train is the critic's SFT; the policy's is tiny.warm_start")
        if self.reward.tiny.warm_start.steps:
            raise ValueError("models.reward.tiny.warm_start is the policy's warm start; the critic's is "
                             "tiny.train")
        return self


class SamplingConfig(Strict):
    n: int = Field(4, ge=1)  # responses per prompt = GRPO group size
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = off
    max_new_tokens: int = Field(64, ge=1)


class VLLMRolloutConfig(Strict):
    """vLLM engine settings (GPU presets; vLLM is an optional extra, absent on CPU machines)."""

    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    max_model_len: int = Field(16384, ge=256)
    max_num_seqs: int = Field(256, ge=1)
    enforce_eager: bool = False
    # Colocated with the trainer on the same GPUs: free the KV cache and weights between rollouts.
    enable_sleep_mode: bool = False
    seed: int = 0


class RolloutConfig(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    vllm: VLLMRolloutConfig = VLLMRolloutConfig()
    # How updated weights reach the rollout workers: the Ray object store (CPU, small models) or a NCCL
    # broadcast from trainer rank 0 into the engines (vLLM `collective_rpc`; GPU).
    weight_sync: Literal["object_store", "nccl"] = "object_store"
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Ray node label `ray.io/node-group` (a KubeRay worker group name) the replicas must run on; None = any node.
    node_group: Optional[str] = None
    sampling: SamplingConfig = SamplingConfig()
    timeout_s: float = Field(300.0, gt=0)  # one generate call; a worker past it is treated as dead
    # Workers replaced (died or hung) per run before a rollout failure stops the run (actors/rollout.py).
    max_replacements: int = Field(4, ge=0)
    # Each rollout becomes an episode: first answer, critic feedback, revised answer (× rounds); GRPO trains
    # the revised turns too, grouped per prompt and round (pipeline/revision.py). 0 = first answers only.
    revision_rounds: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_backend_and_weight_sync(self) -> RolloutConfig:
        # Start-up errors for combinations that could only fail later, on the cluster. (nccl needs vllm, and
        # vllm needs GPUs: so nccl without rollout GPUs is refused too.)
        if self.backend == "vllm" and self.num_gpus < self.vllm.tensor_parallel_size:
            raise ValueError(
                f"rollout.backend=vllm needs rollout.num_gpus >= rollout.vllm.tensor_parallel_size "
                f"({self.vllm.tensor_parallel_size}) GPUs per rollout worker, got {self.num_gpus:g}"
            )
        if self.weight_sync == "nccl":
            if self.backend != "vllm":
                raise ValueError(
                    "rollout.weight_sync=nccl broadcasts into vLLM engines: it needs rollout.backend=vllm "
                    "(the hf backend syncs through the object store: rollout.weight_sync=object_store)"
                )
            if self.vllm.enable_sleep_mode:
                raise ValueError(
                    "rollout.weight_sync=nccl cannot serve engines colocated with the trainer "
                    "(rollout.vllm.enable_sleep_mode): NCCL cannot pair two processes on one GPU; use "
                    "rollout.weight_sync=object_store"
                )
        return self


class WandbConfig(Strict):
    # offline needs no account; `online` needs WANDB_API_KEY (or `wandb login`); `disabled` turns it off.
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "visual-erm-rl"
    entity: Optional[str] = None
    tags: list[str] = []
    # Every N steps (and at the last step) a table of sample rows goes to wandb and to <run_dir>/samples/
    # (the HTML report's gallery); 0: never. Rows per task: the best, the worst and a few drawn at random.
    table_every_steps: int = Field(10, ge=0)
    table_best_per_task: int = Field(1, ge=0)
    table_worst_per_task: int = Field(1, ge=0)
    table_random_per_task: int = Field(1, ge=0)
    table_image_max_side: int = Field(256, ge=16)  # images are downscaled to this: the tables stay small
    table_code_max_chars: int = Field(4000, ge=0)  # longer code is cut, with a marker


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Every step logs one compact INFO line (step i/N, reward, samples/s, step time, ETA; the full scalar
    # record is at DEBUG, in metrics.jsonl and wandb). "auto" also draws a live tqdm bar when stderr is a
    # terminal (not in `ray job submit` logs); "bar" always draws it, "line" never.
    progress: Literal["auto", "bar", "line"] = "auto"
    wandb: WandbConfig = WandbConfig()


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
def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML config file holds (empty file: {}); ConfigError for bad YAML or another top level."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(path: Union[str, Path, None] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Read a YAML preset (default: configs/default.yaml), apply `a.b.c=value` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        # A bare preset name ("default") is looked up in configs/.
        candidate = CONFIG_DIR / f"{path}.yaml" if path.suffix == "" else None
        if candidate is None or not candidate.is_file():
            raise ConfigError(f"config file not found: {path}")
        path = candidate
    data = read_yaml_mapping(path)
    _check_keys(data, Config, prefix="", source=str(path))
    for item in overrides:
        key, value = _parse_override(item)
        _check_path(key, Config)
        _set_path(data, key, value)
    # Merge onto the full default tree: a partial section (`table: {sampling: {max_new_tokens: 256}}`) keeps
    # every default it does not mention, including defaults that differ per parent (tables sample greedily).
    cfg = _validate(_deep_merge(Config().model_dump(mode="json"), data), source=str(path))
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


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key path")
    try:  # YAML typing: 1 → int, true → bool, null → None, [a, b] → list; anything else stays a string
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`Model`, `Optional[Model]`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Union:
        for arg in get_args(annotation):
            sub = _submodel(arg)
            if sub is not None:
                return sub
    return None


def _unknown_key(path: str, name: str, model: type[BaseModel], source: str) -> ConfigError:
    fields = list(model.model_fields)
    hint = difflib.get_close_matches(name, fields, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(
        f"unknown config key '{path}' ({source}): {model.__name__} has no field {name!r}{did_you_mean}. "
        f"Valid keys there: {', '.join(fields)}"
    )


def _check_path(key: str, model: type[BaseModel]) -> None:
    current: type[BaseModel] | None = model
    parts = key.split(".")
    for i, part in enumerate(parts):
        if current is None:  # descending into a leaf (int, str, dict...) is not allowed
            raise ConfigError(f"unknown config key '{key}' (command line): '{'.'.join(parts[:i])}' is a value")
        if part not in current.model_fields:
            raise _unknown_key(key, part, current, "command line")
        current = _submodel(current.model_fields[part].annotation)


def _check_keys(data: dict, model: type[BaseModel], prefix: str, source: str) -> None:
    for name, value in data.items():
        path = f"{prefix}{name}"
        if name not in model.model_fields:
            raise _unknown_key(path, str(name), model, source)
        sub = _submodel(model.model_fields[name].annotation)
        if sub is not None and isinstance(value, dict):
            _check_keys(value, sub, prefix=f"{path}.", source=source)


def _set_path(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def load_model_config(model: type[BaseModel], path: Union[str, Path, None] = None,
                      overrides: tuple[str, ...] | list[str] = ()) -> Any:
    """Any typed config section on its own (a tool's YAML, e.g. `python -m pipeline.critic train --config`):
    the same rules as `load_config` — unknown keys and wrong types fail with the key's path."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = read_yaml_mapping(path)
        source = str(path)
        _check_keys(data, model, prefix="", source=source)
    for item in overrides:
        key, value = _parse_override(item)
        _check_path(key, model)
        _set_path(data, key, value)
    return _validate(_deep_merge(model().model_dump(mode="json"), data), source=source, model=model)


def _validate(data: dict, source: str, model: type[BaseModel] = None) -> Any:
    try:
        return (model or Config).model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {path}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid configuration ({source}):\n" + "\n".join(lines)) from None


def config_to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


def dump_resolved(cfg: Config, source: Optional[str] = None) -> str:
    """The fully resolved config as YAML (`pipeline/main.py --print-config`): every key, defaults and derived
    values included, in schema order; loading it back (`--config FILE`) gives the same config."""
    header = f"# resolved from {source}\n" if source else "# resolved configuration\n"
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, width=110)
