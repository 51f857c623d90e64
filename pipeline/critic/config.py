"""Configuration of the reward service (`reward:` in the run config).

The lead wires `RewardConfig` into `pipeline.config.Config` as `reward:`; until then the CLI reads the
`reward:` section of a YAML preset itself. Defaults are the Visual-ERM paper's settings. Examples:

    reward:                                   # paper form, HF backend, 2 CPU replicas
      backend: hf
      actors: {replicas: 2, num_cpus: 1}
      batching: {max_batch: 16, max_wait_ms: 50}

    reward:                                   # official-code form, Visual-ERM behind two `vllm serve`s
      backend: openai
      openai:
        model: visual-erm-8b
        endpoints: [{base_url: "http://rm-0:8000/v1"}, {base_url: "http://rm-1:8000/v1"}]
      formula:
        terms: [{name: visual_erm_official}, {name: render_success, tasks: [chart, svg]}]

    reward:                                   # a baseline mix
      formula:
        terms: [{name: ssim, weight: 0.5}, {name: teds, weight: 1.0}, {name: render_success}]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.schema import Strict


class RMSamplingConfig(Strict):
    """Sampling of the reward model for one task (paper: charts/SVG T 0.7, top_p 0.8, top_k 20, presence 1.5;
    tables greedy; up to 4096 new tokens)."""

    temperature: float = Field(0.7, ge=0)  # 0 = greedy
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=0)  # 0 = off
    presence_penalty: float = 1.5
    max_new_tokens: int = Field(4096, ge=16)


class JudgementLimits(Strict):
    """Bounds written into the JSON Schema. They bound the length of every valid answer, so constrained
    decoding always finishes inside `max_new_tokens` when that is ≥ `worst_case_tokens` (checked at start)."""

    max_errors: int = Field(24, ge=0)
    max_location_chars: int = Field(120, ge=1)
    max_description_chars: int = Field(400, ge=1)


class TaskRewardSettings(Strict):
    sampling: RMSamplingConfig = RMSamplingConfig()


def _table_settings() -> TaskRewardSettings:
    return TaskRewardSettings(sampling=RMSamplingConfig(temperature=0.0, top_p=1.0, top_k=0, presence_penalty=0.0))


class TasksRewardConfig(Strict):
    chart: TaskRewardSettings = TaskRewardSettings()
    table: TaskRewardSettings = Field(default_factory=_table_settings)
    svg: TaskRewardSettings = TaskRewardSettings()


class HFBackendConfig(Strict):
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    max_batch_size: int = Field(16, ge=1)  # one generate() call at most this many pairs
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch's default
    seed: int = 0


class VLLMBackendConfig(Strict):
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: int = Field(16384, ge=256)
    max_num_seqs: int = Field(64, ge=1)
    engine: Literal["llm", "async"] = "llm"  # vllm.LLM (offline batch) or AsyncLLM (streaming requests)
    enforce_eager: bool = False
    seed: int = 0


class EndpointConfig(Strict):
    base_url: str  # e.g. http://rm-0.rm.svc:8000/v1
    max_concurrency: int = Field(8, ge=1)  # in-flight requests to this endpoint
    api_key_env: str | None = None  # name of an environment variable holding the key (never the key)


class OpenAIBackendConfig(Strict):
    endpoints: list[EndpointConfig] = []
    model: str = "visual-erm"  # the served model name (`vllm serve ... --served-model-name`)
    timeout_s: float = Field(120.0, gt=0)  # one HTTP request
    connect_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(4, ge=0)  # transport-level retries (timeouts, 5xx, 429, refused connection)
    backoff_s: float = Field(0.5, ge=0)  # first backoff; doubles each retry, with jitter
    backoff_max_s: float = Field(20.0, ge=0)
    unhealthy_cooldown_s: float = Field(5.0, ge=0)  # an endpoint that failed is avoided this long
    structured_output: Literal["response_format", "structured_outputs", "guided_json", "none"] = "response_format"


class FingerprintBackendConfig(Strict):
    """The deterministic test backend (`backend: fingerprint`): simulated model time per call and per pair."""

    delay_ms_per_call: float = Field(0.0, ge=0)
    delay_ms_per_pair: float = Field(0.0, ge=0)
    # Fault injection: this fraction of pairs (chosen by their fingerprint, so on every attempt) gets no
    # answer, as if the engine had failed on them — an infrastructure failure, excluded from the update.
    engine_error_rate: float = Field(0.0, ge=0, le=1)


class BatchingConfig(Strict):
    max_batch: int = Field(16, ge=1)  # B: a replica runs the model once it holds this many pairs...
    max_wait_ms: float = Field(50.0, ge=0)  # T: ...or when the oldest has waited this long
    chunk_size: int = Field(4, ge=1)  # samples per remote call from the pool to a replica


class ReplicasConfig(Strict):
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Ray node label `ray.io/node-group` (a KubeRay worker group name) the replicas must run on; None = any node.
    node_group: str | None = None
    request_timeout_s: float = Field(600.0, gt=0)  # one scoring request on one replica
    max_request_attempts: int = Field(3, ge=1)  # a request whose replica died/timed out is retried elsewhere
    health_timeout_s: float = Field(30.0, gt=0)
    max_replacements: int = Field(8, ge=0)  # replicas replaced over the pool's lifetime before giving up
    # A replica whose requests came back with every judgement an engine error this many times in a row has a
    # dead engine inside a live process: its health check fails and it is replaced (actors/reward.py).
    engine_dead_after: int = Field(3, ge=1)


class TermConfig(Strict):
    name: Literal[
        "visual_erm_paper", "visual_erm_official", "render_success", "ssim", "pixel_mse", "teds",
        "code_edit_distance", "embedding",
    ]
    weight: float = 1.0
    tasks: list[Literal["chart", "table", "svg"]] | None = None  # None = every task the term supports


def _paper_terms() -> list[TermConfig]:
    return [TermConfig(name="visual_erm_paper"), TermConfig(name="render_success")]


class EmbeddingConfig(Strict):
    path: str | None = None  # local HF vision-encoder directory (DINOv2-style); required by `embedding`
    device: str = "cpu"
    pooling: Literal["cls", "mean"] = "cls"


class FormulaConfig(Strict):
    terms: list[TermConfig] = Field(default_factory=_paper_terms)
    official_max_severity: float = Field(50.0, gt=0)  # official code: fixed normaliser for charts/SVG
    table_failure_reward: float = -4.0  # official code, tables: reward −S, and this on failure
    # A judgement that is still invalid after `max_attempts`: "fixed_severity" scores it as S =
    # `invalid_severity` (official code: 25); "fail" gives the failure reward with reason invalid_judgement.
    invalid_judgement: Literal["fixed_severity", "fail"] = "fixed_severity"
    invalid_severity: float = Field(25.0, ge=0)
    blank_tolerance: int = Field(2, ge=0)  # a rendering whose pixels all lie within this of one colour is blank


class RewardConfig(Strict):
    backend: Literal["hf", "vllm", "openai", "fingerprint"] = "hf"  # fingerprint: deterministic, tests only
    max_image_side: int = Field(1024, ge=16)  # images sent to the RM (paper: ≤1024 px)
    max_attempts: int = Field(3, ge=1)  # RM answers per pair until one is valid (official: 1 + 2 retries)
    limits: JudgementLimits = JudgementLimits()
    tasks: TasksRewardConfig = TasksRewardConfig()
    hf: HFBackendConfig = HFBackendConfig()
    vllm: VLLMBackendConfig = VLLMBackendConfig()
    openai: OpenAIBackendConfig = OpenAIBackendConfig()
    fingerprint: FingerprintBackendConfig = FingerprintBackendConfig()
    batching: BatchingConfig = BatchingConfig()
    actors: ReplicasConfig = ReplicasConfig()
    formula: FormulaConfig = FormulaConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if self.backend == "openai" and not self.openai.endpoints:
            raise ValueError("reward.backend=openai needs at least one entry in reward.openai.endpoints")
        if any(t.name == "embedding" for t in self.formula.terms) and not self.embedding.path:
            raise ValueError("reward term 'embedding' needs reward.embedding.path (a local vision encoder)")
        return self

    def sampling(self, task: str) -> RMSamplingConfig:
        return getattr(self.tasks, task).sampling

    def uses_judge(self) -> bool:
        return any(t.name.startswith("visual_erm") for t in self.formula.terms)
