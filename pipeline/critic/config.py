"""Configuration of the reward service (`reward:` in the run config).

The lead wires `RewardConfig` into `pipeline.config.Config` as `reward:`; until then the CLI reads the
`reward:` section of a YAML preset itself. Defaults follow the official release (InternLM/Visual-ERM,
rl_scripts/reward_func/*): its reward formula, attempts, blank rule and sampling; the answer format, message
layout and prompt are ours unless a task says otherwise. Examples:

    reward:                                   # official form (the default), HF backend, 2 CPU replicas
      backend: hf
      actors: {replicas: 2, num_cpus: 1}
      batching: {max_batch: 16, max_wait_ms: 50}

    reward:                                   # the public Visual-ERM-8B behind two `vllm serve`s, in its
      backend: openai                         # own answer format, layout and prompt (its authors' text)
      openai:
        model: visual-erm-8b
        endpoints: [{base_url: "http://rm-0:8000/v1"}, {base_url: "http://rm-1:8000/v1"}]
      tasks:
        chart: {answer_format: released, layout: released, prompt_file: /prompts/chart.txt}

    reward:                                   # the batch-normalised form, and a baseline mix
      formula:
        terms: [{name: visual_erm_paper}, {name: render_success}]
    reward:
      formula:
        terms: [{name: ssim, weight: 0.5}, {name: teds, weight: 1.0}, {name: render_success}]
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.sample import JudgementLimits, TaskKind
from pipeline.schema import Strict, deep_merge, load_section


class RMSamplingConfig(Strict):
    """Sampling of the reward model for one task (official code, rl_scripts/reward_func/omnirender_rm_v3.py:
    charts/SVG T 0.7, top_p 0.8, top_k 20, presence 1.5, ≤ 4096 new tokens; table_parse_rm_v2.py: tables
    greedy, repetition penalty 1.05, ≤ 8192 new tokens)."""

    temperature: float = Field(0.7, ge=0)  # 0 = greedy
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=0)  # 0 = off
    presence_penalty: float = 1.5
    repetition_penalty: float = Field(1.0, gt=0)  # 1 = off (HF / vLLM multiplicative penalty)
    max_new_tokens: int = Field(4096, ge=16)


ErrorField = Literal["category", "severity", "location", "description"]


class AnswerFormat(Strict):
    """The shape of one critic answer: field names, category spelling, count fields and key order.

    The parsed judgement is the same whatever the format (errors {category, severity, location,
    description} with the bare category names of `schema.CATEGORIES`, counts by bare category); the format
    decides what the constrained decoder admits, what the parser accepts and what critic SFT targets say.
    Built-ins (`answer_format: ours | released`):
      ours      {"errors": [{"category": "data", "severity": 2, "location": ..., "description": ...}],
                 "counts": {"structure": 0, "data": 1, ...}}
      released  the public Visual-ERM checkpoint's (prompts in the official rl_scripts/reward_func/
                reward_utils.py and table_parse_rm_v2.py): {"structure_error_count": 0, ..., "errors":
                [{"category": "data_error", "severity": 2, "location": ..., "description": ...}]}; tables
                name the field `type`, give no `location` and order {type, description, severity}.
    """

    category_key: str = Field("category", min_length=1)  # the error's category field ("type" for released tables)
    category_suffix: str = ""  # written after the bare category name ("_error" in the released format)
    # The fields of one error, in order; `location` may be left out (its text then leads the description).
    error_fields: list[ErrorField] = ["category", "severity", "location", "description"]
    counts: Literal["object", "fields", "none"] = "object"  # one object of counts, top-level fields, or none
    counts_key: str = Field("counts", min_length=1)  # counts=object: its key
    count_field: str = "{category}_error_count"  # counts=fields: each field's name ({category} = bare name)
    counts_first: bool = False  # counts before `errors` (released) or after (ours)

    @model_validator(mode="after")
    def _check(self) -> "AnswerFormat":
        fields = self.error_fields
        for need in ("category", "severity", "description"):
            if fields.count(need) != 1:
                raise ValueError(f"error_fields must name {need!r} exactly once, got {fields}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"error_fields lists a field twice: {fields}")
        if self.counts == "fields" and "{category}" not in self.count_field:
            raise ValueError("count_field must contain '{category}'")
        if self.category_key in ("severity", "location", "description"):
            raise ValueError(f"category_key {self.category_key!r} collides with another error field")
        return self

    @property
    def has_location(self) -> bool:
        return "location" in self.error_fields

    def error_key(self, field: str) -> str:
        return self.category_key if field == "category" else field

    def count_name(self, category: str) -> str:
        return self.count_field.format(category=category)


OURS_FORMAT = AnswerFormat()
# Official prompts: PROMPT_CHART2CODE_JUDGEMENT / PROMPT_IMG2SVG_JUDGEMENT (rl_scripts/reward_func/reward_utils.py)
RELEASED_FORMAT = AnswerFormat(category_suffix="_error", counts="fields", counts_first=True)
# Official prompt: build_error_prompt_for_images (rl_scripts/reward_func/table_parse_rm_v2.py)
RELEASED_TABLE_FORMAT = AnswerFormat(category_key="type", category_suffix="_error", counts="fields",
                                     counts_first=True, error_fields=["category", "description", "severity"])
FORMAT_NAMES = ("ours", "released")


def builtin_format(name: str, task: str) -> AnswerFormat:
    if name == "ours":
        return OURS_FORMAT
    if name == "released":
        return RELEASED_TABLE_FORMAT if task == "table" else RELEASED_FORMAT
    raise ValueError(f"unknown answer format {name!r} (built-ins: {', '.join(FORMAT_NAMES)}, or a YAML file)")


@lru_cache(maxsize=32)
def _format_file(path: str) -> AnswerFormat:
    file = Path(os.path.expanduser(path))
    if not file.is_file():
        raise ValueError(f"answer format file {file} not found (built-ins: {', '.join(FORMAT_NAMES)})")
    return load_section(AnswerFormat, file, merge_defaults=False)


def resolve_format(spec: "str | AnswerFormat | None", task: str) -> AnswerFormat:
    """An answer format from its configured value: a built-in name, a YAML file of AnswerFormat fields, or
    the fields themselves; None = ours."""
    if spec is None:
        return OURS_FORMAT
    if isinstance(spec, AnswerFormat):
        return spec
    if spec in FORMAT_NAMES:
        return builtin_format(spec, task)
    return _format_file(spec)


class TaskRewardSettings(Strict):
    sampling: RMSamplingConfig = RMSamplingConfig()
    # The answer the critic is asked for and constrained to: ours | released | a YAML file | the fields inline.
    answer_format: str | AnswerFormat = "ours"
    # Message layout and image handling: ours (captions "Reference image:" / "Rendered image:" around the two
    # images, both ≤ reward.max_image_side, PNG) or released (the official reward code: the two images, then
    # the text; tables with the system line "You are a helpful assistant.", "<image>\n<image>\n" before the
    # text, PNG ≤ 768 px, the rendering cropped with 12 px padding; charts/SVG JPEG ≤ 1024 px).
    layout: Literal["ours", "released"] = "ours"
    max_attempts: int = Field(2, ge=1)  # answers per pair until one is valid (official: charts/SVG 2, tables 1)
    # How an answer is read (pipeline/critic/judgement.py): "official" = an answer the schema rejects is read
    # leniently, as the official reward code reads it (counted: samples/judgement/lenient); "strict" = only a
    # schema-valid answer counts. With constrained decoding (hf, vllm) every answer is schema-valid anyway.
    parsing: Literal["official", "strict"] = "official"
    # The critic's instruction text, read from this file (e.g. the prompt a public checkpoint was trained on;
    # its authors' text, which we do not ship). None: our own instruction (pipeline/critic/prompts.py),
    # describing the configured answer format.
    prompt_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "TaskRewardSettings":
        if isinstance(self.answer_format, str) and self.answer_format not in FORMAT_NAMES:
            resolve_format(self.answer_format, "chart")  # a file: fails here, naming the key, not at serving
        if self.prompt_file is not None and not Path(os.path.expanduser(self.prompt_file)).is_file():
            raise ValueError(f"prompt_file {self.prompt_file} not found")
        return self


def _table_settings() -> TaskRewardSettings:
    # Official table reward (table_parse_rm_v2.py): temperature 0, repetition penalty 1.05, 8192 new tokens.
    # One call, −4 if it fails to parse.
    return TaskRewardSettings(sampling=RMSamplingConfig(temperature=0.0, top_p=1.0, top_k=0, presence_penalty=0.0,
                                                        repetition_penalty=1.05, max_new_tokens=8192),
                              max_attempts=1)


class TasksRewardConfig(Strict):
    chart: TaskRewardSettings = TaskRewardSettings()
    table: TaskRewardSettings = Field(default_factory=_table_settings)
    svg: TaskRewardSettings = TaskRewardSettings()

    @model_validator(mode="before")
    @classmethod
    def _table_defaults(cls, data):
        # A partial `table:` section keeps the table defaults it does not name (greedy, one attempt...),
        # instead of silently falling back to the chart/SVG ones.
        if isinstance(data, dict) and isinstance(data.get("table"), dict):
            data = {**data, "table": deep_merge(_table_settings().model_dump(exclude_unset=False), data["table"])}
        return data


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
    # Batches a replica has in flight at once. None: enough to keep an engine with continuous batching full —
    # twice the batches that fill its sequence slots, so a slot that frees finds a request waiting (vllm with
    # engine=async: 2·ceil(vllm.max_num_seqs / max_batch); openai: 2·ceil(all endpoints' max_concurrency /
    # max_batch); benchmarks/reward_engine.py) — and 1 for engines that serve one call at a time (hf, vllm
    # engine=llm, fingerprint).
    concurrency: int | None = Field(None, ge=1)


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
    tasks: list[TaskKind] | None = None  # None = every task the term supports


def _official_terms() -> list[TermConfig]:
    # The official reward code: charts/SVG 1 (rendered) + clip(1 − S/50, 0, 1) (omnirender_rm_v3.py), tables −S
    # (table_parse_rm_v2.py, which has no render term).
    return [TermConfig(name="visual_erm_official"), TermConfig(name="render_success", tasks=["chart", "svg"])]


class EmbeddingConfig(Strict):
    path: str | None = None  # local HF vision-encoder directory (DINOv2-style); required by `embedding`
    device: str = "cpu"
    pooling: Literal["cls", "mean"] = "cls"


class FormulaConfig(Strict):
    """How a judgement and a rendering become a reward. The defaults are the official reward code's
    (InternLM/Visual-ERM rl_scripts/reward_func/): `visual_erm_official` + `render_success` on charts/SVG."""

    terms: list[TermConfig] = Field(default_factory=_official_terms)
    official_max_severity: float = Field(50.0, gt=0)  # official code (MAX_SEVERITY): fixed normaliser, charts/SVG
    table_failure_reward: float = -4.0  # official code, tables: reward −S, and this on any failure
    # A judgement still invalid after its attempts: "official" = as the official code, charts/SVG S =
    # `invalid_severity` (SEVERITY_AVG = −25), tables the failure reward (−4); "fixed_severity" = S =
    # `invalid_severity` for every task; "fail" = the failure reward with reason invalid_judgement.
    invalid_judgement: Literal["official", "fixed_severity", "fail"] = "official"
    invalid_severity: float = Field(25.0, ge=0)
    # Which renderings are blank (a failure, never judged): "official" = every pixel of the grayscale image is
    # 255, charts/SVG only (is_white_image in omnirender_rm_v3.py; tables are judged whatever they show);
    # "tolerance" = every task, all pixels within `blank_tolerance` of one colour.
    blank_rule: Literal["official", "tolerance"] = "official"
    blank_tolerance: int = Field(2, ge=0)

    def invalid_rule(self, task: str) -> str:
        if self.invalid_judgement == "official":
            return "fail" if task == "table" else "fixed_severity"
        return self.invalid_judgement


class RewardConfig(Strict):
    # structural: the oracle critic (the reference and policy programs diffed, no model; needs reference programs);
    # fingerprint: deterministic, tests only.
    backend: Literal["hf", "vllm", "openai", "structural", "fingerprint"] = "hf"
    max_image_side: int = Field(1024, ge=16)  # images sent to the RM (paper: ≤1024 px)
    # RM answers per pair until one is valid, for every task; None = each task's `max_attempts` (official:
    # charts/SVG 2 — get_reward_from_rm(retry=2) —, tables 1).
    max_attempts: int | None = Field(None, ge=1)
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
        if not self.batches_continuously() and (self.batching.concurrency or 1) > 1:
            raise ValueError(f"reward.batching.concurrency > 1 needs an engine that batches continuously (vllm with "
                             f"vllm.engine=async, or openai); reward.backend={self.backend} serves one call at a time")
        return self

    def batches_continuously(self) -> bool:
        """An engine that takes requests while others run (vLLM's AsyncLLM, an OpenAI-compatible server); hf,
        vLLM's offline LLM and fingerprint serve one call at a time."""
        return (self.backend == "vllm" and self.vllm.engine == "async") or self.backend == "openai"

    def batch_concurrency(self) -> int:
        """Batches a replica keeps in flight (`batching.concurrency`, or enough to fill the engine)."""
        b = self.batching
        if b.concurrency is not None:
            return b.concurrency
        if self.backend == "vllm" and self.vllm.engine == "async":
            return 2 * -(-self.vllm.max_num_seqs // b.max_batch)
        if self.backend == "openai":
            return 2 * -(-sum(e.max_concurrency for e in self.openai.endpoints) // b.max_batch)
        return 1

    def sampling(self, task: str) -> RMSamplingConfig:
        return getattr(self.tasks, task).sampling

    def task_settings(self, task: str) -> TaskRewardSettings:
        return getattr(self.tasks, task)

    def attempts(self, task: str) -> int:
        return self.max_attempts if self.max_attempts is not None else getattr(self.tasks, task).max_attempts

    def answer_format(self, task: str) -> AnswerFormat:
        return resolve_format(getattr(self.tasks, task).answer_format, task)

    def critic_label(self) -> str:
        """Who lists the discrepancies, in the words the run report, the wandb table and the logs show."""
        return {"structural": "oracle: structural diff of the reference and policy programs (no model)",
                "hf": "learned critic (hf backend)", "vllm": "learned critic (vllm backend)",
                "openai": "critic endpoint (openai backend)",
                "fingerprint": "fingerprint stand-in (tests only)"}[self.backend]

    def uses_judge(self) -> bool:
        return any(t.name.startswith("visual_erm") for t in self.formula.terms)
