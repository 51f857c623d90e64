"""Check every vLLM class, method, parameter and attribute our code touches against an installed vLLM.

The production path (pipeline/rollout/vllm.py, vllm_worker.py, weight_sync.py, pipeline/critic/backends/vllm.py)
runs only on GPU machines with the `gpu` extra; a renamed keyword or a moved module would surface there, after
minutes of cluster start-up. This script needs no GPU: a CPU venv with the pinned vLLM imports these modules
and `inspect` does the rest.

    uv venv -p 3.11 /tmp/gpu-venv                                # the whole GPU environment, as the image has it
    grep -v '^flash-attn' requirements-gpu.lock > /tmp/gpu.lock  # (flash-attn builds only with CUDA: not needed here)
    VIRTUAL_ENV=/tmp/gpu-venv uv pip install --no-deps -r /tmp/gpu.lock    # ~9 GB, CUDA wheels included
    /tmp/gpu-venv/bin/python benchmarks/vllm_api_check.py       # exit 0: every check passed

`TOUCHED` is the list, collected by reading our code (tests/test_vllm_api.py checks that every vLLM import in
our code is named here). Keep it in step when the code touches something new.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing
from dataclasses import dataclass
from typing import Any

# The release range the code is written for (pyproject.toml's `gpu` extra says the same; a test checks it).
VLLM_REQUIREMENT = "vllm>=0.31.0,<0.32"


@dataclass(frozen=True)
class Exists:
    """An importable module attribute (class, function, constant) at `path` ("module:qualname")."""

    path: str

    def check(self) -> list[str]:
        try:
            resolve(self.path)
        except Exception as e:  # noqa: BLE001 - report, do not stop the other checks
            return [f"{self.path}: {type(e).__name__}: {e}"]
        return []


@dataclass(frozen=True)
class Params:
    """`path` is callable with these keyword names. A `**kwargs` catch-all counts only when `kwargs_into` (a
    dataclass that receives the rest, e.g. LLM(**kw) → EngineArgs) has the field."""

    path: str
    names: tuple[str, ...]
    kwargs_into: str | None = None

    def check(self) -> list[str]:
        try:
            target = resolve(self.path)
            signature = inspect.signature(target)
        except Exception as e:  # noqa: BLE001
            return [f"{self.path}: {type(e).__name__}: {e}"]
        params = signature.parameters
        extra: set[str] = set()
        if self.kwargs_into is not None:
            extra = field_names(resolve(self.kwargs_into))
        problems = []
        for name in self.names:
            if name in params and params[name].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                              inspect.Parameter.VAR_KEYWORD):
                continue
            if name in extra:
                continue
            problems.append(f"{self.path}: no parameter {name!r} (has {sorted(params)})")
        return problems


@dataclass(frozen=True)
class Fields:
    """Instances of the class at `path` carry these attributes (dataclass / msgspec / pydantic fields,
    `__init__` parameters, or class attributes)."""

    path: str
    names: tuple[str, ...]

    def check(self) -> list[str]:
        try:
            cls = resolve(self.path)
        except Exception as e:  # noqa: BLE001
            return [f"{self.path}: {type(e).__name__}: {e}"]
        known = field_names(cls)
        try:
            known |= set(inspect.signature(cls.__init__).parameters)
        except (TypeError, ValueError):
            pass
        return [f"{self.path}: no attribute {name!r}" for name in self.names
                if name not in known and not hasattr(cls, name)]


@dataclass(frozen=True)
class LiteralValue:
    """`value` is one of the values of the Literal type alias at `path`."""

    path: str
    value: str

    def check(self) -> list[str]:
        try:
            alias = resolve(self.path)
        except Exception as e:  # noqa: BLE001
            return [f"{self.path}: {type(e).__name__}: {e}"]
        values = literal_values(alias)
        return [] if self.value in values else [f"{self.path}: {self.value!r} not in {sorted(values)}"]


@dataclass(frozen=True)
class Source:
    """The source of `path` contains `needle`: a documented behaviour our code relies on (checked on the text
    because it is not visible in a signature)."""

    path: str
    needle: str
    why: str

    def check(self) -> list[str]:
        try:
            text = inspect.getsource(resolve(self.path))
        except Exception as e:  # noqa: BLE001
            return [f"{self.path}: {type(e).__name__}: {e}"]
        return [] if self.needle in text else [f"{self.path}: lacks {self.needle!r} ({self.why})"]


def resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def field_names(cls: Any) -> set[str]:
    names: set[str] = set()
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    names |= set(getattr(cls, "__struct_fields__", ()))  # msgspec.Struct (SamplingParams)
    names |= set(getattr(cls, "model_fields", {}) or {})  # pydantic
    try:
        names |= set(typing.get_type_hints(cls))
    except Exception:  # noqa: BLE001 - forward references vLLM only resolves under TYPE_CHECKING
        names |= set(getattr(cls, "__annotations__", {}))
    return names


def literal_values(alias: Any) -> set[Any]:
    if typing.get_origin(alias) is typing.Literal:
        return set(typing.get_args(alias))
    values: set[Any] = set()
    for arg in typing.get_args(alias):  # a Union of Literals
        values |= literal_values(arg)
    return values


# What pipeline/rollout/{vllm,vllm_worker,weight_sync}.py and pipeline/critic/backends/vllm.py touch. A
# worker-extension method name we pass to collective_rpc is checked as a method of the GPU worker.
ENGINE_KWARGS = (
    "model", "dtype", "tensor_parallel_size", "distributed_executor_backend", "gpu_memory_utilization",
    "max_model_len", "max_num_seqs", "enforce_eager", "enable_sleep_mode", "seed", "limit_mm_per_prompt",
    "logprobs_mode", "worker_extension_cls", "weight_transfer_config",
)
TOUCHED: tuple[Any, ...] = (
    # engines
    Params("vllm:LLM", ENGINE_KWARGS, kwargs_into="vllm.engine.arg_utils:EngineArgs"),
    Params("vllm:LLM.generate", ("prompts", "sampling_params", "use_tqdm")),
    Params("vllm:LLM.collective_rpc", ("method", "timeout", "args", "kwargs")),
    Source("vllm:LLM.__init__", "self.llm_engine =", "LLM.llm_engine is the engine (reset_encoder_cache)"),
    Params("vllm:LLM.reset_prefix_cache", ()),
    Params("vllm:LLM.sleep", ("level",)),
    Params("vllm:LLM.wake_up", ()),
    Fields("vllm.engine.arg_utils:AsyncEngineArgs", tuple(n for n in ENGINE_KWARGS if n != "model") + ("model",)),
    Params("vllm.v1.engine.async_llm:AsyncLLM.from_engine_args", ("engine_args",)),
    Params("vllm.v1.engine.async_llm:AsyncLLM.generate", ("prompt", "sampling_params", "request_id")),
    Params("vllm.v1.engine.async_llm:AsyncLLM.shutdown", ()),
    # the log-probs the trainer compares with: after temperature (and top-p/k, bad words)
    LiteralValue("vllm.config.model:LogprobsMode", "processed_logprobs"),
    Source("vllm.config.model:ModelConfig", "Processed means the values after applying all processors, including\n"
           "    temperature", "processed log-probs are taken after temperature scaling"),
    # sampling
    Params("vllm:SamplingParams", (
        "n", "temperature", "top_p", "top_k", "max_tokens", "logprobs", "stop_token_ids", "bad_words",
        "presence_penalty", "repetition_penalty", "seed", "structured_outputs",
    )),
    Params("vllm.sampling_params:StructuredOutputsParams", ("json",)),
    # outputs
    Fields("vllm.outputs:RequestOutput", ("prompt_token_ids", "outputs")),
    Fields("vllm.outputs:CompletionOutput", ("index", "text", "token_ids", "logprobs", "finish_reason")),
    Fields("vllm.logprobs:Logprob", ("logprob",)),
    # worker extension: `self` is the GPU worker (pipeline/rollout/vllm_worker.py)
    Exists("vllm.v1.worker.gpu_worker:Worker"),
    Source("vllm.v1.worker.gpu_worker:Worker.init_device", "self.model_runner",
           "the worker owns a model_runner (built at init_device)"),
    Source("vllm.v1.worker.worker_base:WorkerBase.__init__", "self.model_config", "the worker has model_config"),
    Params("vllm.v1.worker.gpu_model_runner:GPUModelRunner.get_model", ()),
    Params("vllm.v1.worker.gpu.model_runner:GPUModelRunner.get_model", ()),  # VLLM_USE_V2_MODEL_RUNNER
    Params("vllm.model_executor.model_loader.reload:initialize_layerwise_reload", ("model",)),
    Params("vllm.model_executor.model_loader.reload:finalize_layerwise_reload", ()),
    Source("vllm.model_executor.model_loader.reload.layerwise:finalize_layerwise_reload",
           "finalize_layerwise_processing", "finalize_layerwise_reload(model, model_config) processes after load"),
    Params("vllm.model_executor.models.qwen3_vl:Qwen3VLForConditionalGeneration.load_weights", ("weights",)),
    # caches derived from the weights, reset after every update
    Params("vllm.v1.engine.llm_engine:LLMEngine.reset_encoder_cache", ()),
    # native weight transfer: the engine's config, the worker methods our RPCs name, the trainer's end
    Params("vllm.config.weight_transfer:WeightTransferConfig", ("backend",)),
    Params("vllm.v1.worker.gpu_worker:Worker.init_weight_transfer_engine", ("init_info",)),
    Params("vllm.v1.worker.gpu_worker:Worker.start_weight_update", ()),
    Params("vllm.v1.worker.gpu_worker:Worker.update_weights", ("update_info",)),
    Params("vllm.v1.worker.gpu_worker:Worker.finish_weight_update", ()),
    Params("vllm:LLM.init_weight_transfer_engine", ("request",)),  # the same calls, LLM's RL mixin
    Params("vllm:LLM.update_weights", ("request",)),
    Fields("vllm.distributed.weight_transfer.nccl_engine:NCCLWeightTransferInitInfo",
           ("master_address", "master_port", "rank_offset", "world_size", "packed")),
    Fields("vllm.distributed.weight_transfer.nccl_engine:NCCLWeightTransferUpdateInfo",
           ("names", "dtype_names", "shapes")),
    Source("vllm.distributed.weight_transfer.nccl_common:worker_init_process_group", "parallel_config.rank",
           "worker ranks in the weight group come from the parallel config (TP x PP x DP safe)"),
    Source("vllm.distributed.weight_transfer.nccl_engine:NCCLWeightTransferEngine.receive_weights",
           "self.model_update_group.broadcast(", "unpacked receive: one broadcast per tensor, in update-info order"),
    Params("vllm.distributed.weight_transfer.nccl_common:trainer_init", ("init_info", "rank")),
    Source("vllm.distributed.weight_transfer.nccl_common:stateless_init_process_group",
           "StatelessProcessGroup.create", "the group's TCP store is hosted by trainer rank 0 at master_port "
           "(our round handshake connects to it)"),
    Params("vllm.distributed.device_communicators.pynccl:PyNcclCommunicator.broadcast", ("tensor", "src",
                                                                                          "stream")),
)

# Every `vllm...` module our code imports from, with the names it takes (tests/test_vllm_api.py compares).
IMPORTED = {
    "vllm": {"LLM", "SamplingParams"},
    "vllm.engine.arg_utils": {"AsyncEngineArgs"},
    "vllm.v1.engine.async_llm": {"AsyncLLM"},
    "vllm.sampling_params": {"StructuredOutputsParams"},
    "vllm.distributed.weight_transfer.nccl_common": {"trainer_init"},
    "vllm.model_executor.model_loader.reload": {"initialize_layerwise_reload", "finalize_layerwise_reload"},
}


def run() -> tuple[int, list[str]]:
    """(number of checks, problems)."""
    problems: list[str] = []
    for item in TOUCHED:
        problems += item.check()
    for module, names in IMPORTED.items():
        for name in sorted(names):
            problems += Exists(f"{module}:{name}").check()
    return len(TOUCHED) + sum(len(n) for n in IMPORTED.values()), problems


def main() -> int:
    try:
        import vllm
    except Exception as e:  # noqa: BLE001
        print(f"vLLM is not importable here ({type(e).__name__}: {e}): nothing to check", file=sys.stderr)
        return 2
    from packaging.requirements import Requirement

    requirement = Requirement(VLLM_REQUIREMENT)
    version = vllm.__version__
    in_range = requirement.specifier.contains(version, prereleases=True)
    count, problems = run()
    print(f"vLLM {version} ({'inside' if in_range else 'OUTSIDE'} {VLLM_REQUIREMENT}): {count} checks, "
          f"{len(problems)} problem(s)")
    for p in problems:
        print(f"  - {p}")
    return 0 if in_range and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
