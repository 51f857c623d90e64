"""A CPU platform for verl 0.9.1, so that verl's FSDP2 training engine runs on machines without accelerators.

verl resolves every device question (device name, `torch.<device>` module, collective backend, Ray resource)
through one platform object (`verl.plugin.platform.get_platform()`). It ships NVIDIA, Ascend NPU and ROCm
platforms only and, finding none of them, silently falls back to "nvidia" — which then fails deep inside the
engine. This module registers a "cpu" platform with verl's registry:

* selected with `VERL_PLATFORM=cpu`, or auto-detected when no NVIDIA / ROCm / NPU device is present;
* loaded by verl through the `verl.plugins` entry point of this package, or `VERL_USE_EXTERNAL_MODULES=
  pipeline.training.verl_platform`, or simply by importing this module before verl's engine modules are imported.

`prepare_process_for_verl_cpu(rank, world_size, ...)` readies one training process (a Ray trainer actor, a test)
for verl's `TrainingWorker`: it sets the env vars verl's `Worker` reads, forces this platform, registers verl's
FSDP engines for device "cpu", and initialises a gloo process group (see its docstring for why verl cannot).

Caveat for GPU clusters: once this plugin is installed, a process that sees no accelerator (a CPU-only Ray
head or driver pod) auto-detects "cpu" where verl would have fallen back to "nvidia". Processes that host
GPU work detect their GPU as before; set `VERL_PLATFORM=nvidia` in the runtime_env of any CPU-only process
that must still speak verl's GPU resource names.

No Ray imports here: this runs inside whichever process hosts the trainer.
"""

from __future__ import annotations

import logging
import os
import types
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psutil
import torch
import torch.distributed as dist

# Importing verl runs its plugin loading; that is harmless here (it may import this very module again through
# VERL_USE_EXTERNAL_MODULES, which Python's module cache turns into a no-op).
from verl.plugin.platform import PlatformBase, PlatformRegistry, get_platform, set_platform

from pipeline.distributed import free_port, set_rank_env

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"
GLOO = "gloo"


# ---------------------------------------------------------------------------------------------------------
# torch.<device> stand-in
# ---------------------------------------------------------------------------------------------------------
def _build_cpu_device_module() -> types.ModuleType:
    """`torch.cpu` plus the CUDA-style calls verl makes on `get_torch_device()`.

    verl treats the platform's device module like `torch.cuda`: it calls `empty_cache`, `max_memory_allocated`,
    `mem_get_info`, `manual_seed`, `get/set_rng_state`, `set_device`, ... `torch.cpu` has only a few of these
    (`synchronize`, `current_device`, `device_count`, `Stream`, `Event`), so this module re-exports `torch.cpu`
    and adds the rest with their CPU meaning: host memory from psutil, the global CPU RNG, no-ops for caches.
    """
    module = types.ModuleType("pipeline.training.verl_platform.cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("__"):
            setattr(module, name, getattr(torch.cpu, name))

    def _rss() -> int:
        return psutil.Process().memory_info().rss

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return vm.available, vm.total

    module.is_available = lambda: True
    # torch.cpu.current_device() returns the string "cpu"; verl uses current_device() as a `.to()` /
    # `torch.device()` argument, where an int would mean a CUDA ordinal — so "cpu" is what we want.
    module.current_device = lambda: "cpu"
    module.device_count = lambda: 1
    module.set_device = lambda device=None: None
    module.synchronize = lambda device=None: None
    module.empty_cache = lambda: None
    module.ipc_collect = lambda: None
    module.set_per_process_memory_fraction = lambda fraction, device=None: None
    module.memory_allocated = lambda device=None: _rss()
    module.max_memory_allocated = lambda device=None: _rss()
    module.memory_reserved = lambda device=None: _rss()
    module.max_memory_reserved = lambda device=None: _rss()
    module.reset_peak_memory_stats = lambda device=None: None
    module.mem_get_info = mem_get_info
    module.get_device_name = lambda device=None: "cpu"
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.get_rng_state = lambda device=None: torch.get_rng_state()
    module.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    return module


CPU_DEVICE_MODULE = _build_cpu_device_module()


# ---------------------------------------------------------------------------------------------------------
# The platform
# ---------------------------------------------------------------------------------------------------------
@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for plain CPUs: device "cpu", gloo collectives, Ray resource "CPU"."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True  # a CPU is always there

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """Auto-detect CPU only as the last resort: never shadow a real accelerator platform.

        verl probes registered platforms in registration order and takes the first available one. Whatever the
        order (another plugin may register after us), we claim the machine only if every other registered
        platform (NVIDIA, ROCm, NPU, third-party chips) says it is unavailable.
        """
        for name in PlatformRegistry.registered_names():
            other = PlatformRegistry.get(name)
            if other is None or other is type(self) or issubclass(other, PlatformCPU):
                continue
            try:
                if other().is_platform_available(use_smi_check=use_smi_check):
                    return False
            except Exception as e:  # noqa: BLE001 - a failing probe of another vendor means "not that vendor"
                logger.debug("platform %r probe failed: %s", name, e)
        return True

    def current_device(self) -> str:  # type: ignore[override]
        # Not an int on purpose: see CPU_DEVICE_MODULE.current_device.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None  # CPU ops are synchronous

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None  # "expandable_segments" etc. are CUDA caching-allocator settings

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return GLOO

    def visible_devices_envvar(self) -> str:
        # verl's Worker copies this variable between processes; a CPU has no device list, so use a name that
        # no runtime interprets (returning CUDA_VISIBLE_DEVICES would let verl rewrite a real GPU mask).
        return "VERL_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        # "CPU" is a Ray built-in resource: it must be requested as num_cpus, not as a custom resource.
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False  # CUDA IPC handles do not exist; weights travel through the Ray object store

    def cudart(self) -> Any:
        return None


# ---------------------------------------------------------------------------------------------------------
# Process preparation
# ---------------------------------------------------------------------------------------------------------
def use_cpu_platform() -> PlatformBase:
    """Make this process's verl platform the CPU one, even if something already resolved another."""
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    current = get_platform()
    if not isinstance(current, PlatformCPU):
        set_platform(PlatformCPU())
    return get_platform()


def register_cpu_engines() -> None:
    """Let verl's engine registry hand out its FSDP engines on device "cpu".

    `verl/workers/engine/fsdp/transformer_impl.py` registers `FSDPEngineWithLMHead` / `FSDPEngineWithValueHead`
    for devices ["cuda", "npu"] only, so `EngineRegistry.new(..., backend="fsdp2")` raises "No engine registered
    for device='cpu'". The engines themselves are device-agnostic (they go through the platform), so we add the
    same classes under "cpu". Must run after the platform is chosen: transformer_impl reads the device name at
    import time.
    """
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.engine.base import EngineRegistry

    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.engine.fsdp import transformer_impl

    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in (
        ("language_model", FSDPEngineWithLMHead),
        ("value_model", FSDPEngineWithValueHead),
    ):
        for backend in ("fsdp", "fsdp2"):
            registry = EngineRegistry._engines.setdefault(model_type, {}).setdefault(backend, {})
            registry.setdefault(PLATFORM_NAME, engine_cls)

    # Forward-only engines (the reference policy) are wrapped by verl with FSDP2 `CPUOffloadPolicy(pin_memory=True)`
    # (transformer_impl.FSDPEngine._build_fsdp_module); pinning host memory needs an accelerator and fails here
    # with "Cannot access accelerator device when none is available". On a CPU the "offload" target is where the
    # weights already live, so the same policy without pinning is exact. Only the name in that module is
    # replaced; torch's class is untouched.
    if not isinstance(transformer_impl.CPUOffloadPolicy, _UnpinnedOffloadPolicyFactory):
        transformer_impl.CPUOffloadPolicy = _UnpinnedOffloadPolicyFactory(transformer_impl.CPUOffloadPolicy)


class _UnpinnedOffloadPolicyFactory:
    """Stands in for `CPUOffloadPolicy` inside verl's FSDP engine module: same policy, pin_memory forced off."""

    def __init__(self, policy_cls: type) -> None:
        self.policy_cls = policy_cls

    def __call__(self, pin_memory: bool = True):  # verl always asks for pin_memory=True
        return self.policy_cls(pin_memory=False)


def prepare_process_for_verl_cpu(
    rank: int = 0,
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    timeout_s: float = 120.0,
    num_threads: int | None = None,
) -> None:
    """Ready this process to host one rank of verl's `TrainingWorker` on CPU.

    1. Env vars verl's `Worker.__init__` reads (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
       VERL_PLATFORM=cpu. All ranks must be given the same master_addr/master_port (rank 0 hosts the store).
    2. The CPU platform becomes verl's platform; verl's FSDP engines are registered for device "cpu".
    3. A gloo default process group. verl's `initialize_global_process_group_ray` would build the backend string
       "cpu:gloo,cpu:gloo" (gloo for CPU tensors plus "<device>:<platform backend>"), which torch rejects as a
       duplicate device; it skips initialisation when a group already exists, so we create one ourselves.

    Idempotent: a second call in a process that already has a matching group does nothing.
    """
    if master_port is None:
        if world_size > 1:
            raise ValueError("world_size > 1 needs an explicit master_port shared by all ranks")
        master_port = int(os.environ.get("MASTER_PORT") or free_port())
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    set_rank_env(rank, world_size, master_addr, master_port)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    use_cpu_platform()
    register_cpu_engines()
    _join_process_group(GLOO, rank, world_size, master_addr, master_port, timeout_s)


def _join_process_group(backend: str, rank: int, world_size: int, master_addr: str, master_port: int,
                        timeout_s: float) -> None:
    """Create this rank's default process group; an existing group must be this very rank's (idempotent)."""
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"a process group (rank {dist.get_rank()}/{dist.get_world_size()}) already exists; "
                f"cannot prepare rank {rank}/{world_size}"
            )
        return
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def prepare_process_for_verl_gpu(
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    timeout_s: float = 600.0,
) -> None:
    """Ready this process to host one rank of verl's `TrainingWorker` on one GPU (verl's NVIDIA platform, nccl).

    NOT EXERCISED on the CPU development machines (no GPU): it is the GPU side of the seam, written to verl's
    own conventions. The process must see exactly one GPU (Ray sets CUDA_VISIBLE_DEVICES for an actor with
    num_gpus=1). verl would create the same process group itself (`initialize_global_process_group_ray`:
    backend "cpu:gloo,cuda:nccl" from the env vars); doing it here adds the collective timeout and an
    explicit rendezvous address instead of env://.
    """
    if os.environ.get("VERL_PLATFORM") == PLATFORM_NAME:
        raise RuntimeError(
            "VERL_PLATFORM=cpu is set in a GPU trainer process; remove it from its runtime_env"
        )
    if not torch.cuda.is_available():
        raise RuntimeError("a GPU trainer rank sees no CUDA device (num_gpus_per_rank > 0 on a CPU node?)")
    set_rank_env(rank, world_size, master_addr, master_port)
    torch.cuda.set_device(0)
    _join_process_group("cpu:gloo,cuda:nccl", rank, world_size, master_addr, master_port, timeout_s)


def prepare_process_for_verl(
    device: str,
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    timeout_s: float = 600.0,
    num_threads: int | None = None,
) -> None:
    """The device switch: "cpu" → our CPU platform + gloo; "cuda" → verl's NVIDIA platform + nccl."""
    if device == "cpu":
        prepare_process_for_verl_cpu(rank, world_size, master_addr, master_port, timeout_s, num_threads)
    elif device == "cuda":
        prepare_process_for_verl_gpu(rank, world_size, master_addr, master_port, timeout_s)
    else:
        raise ValueError(f"unknown trainer device {device!r} (expected 'cpu' or 'cuda')")


def shutdown_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "CPU_DEVICE_MODULE",
    "PLATFORM_NAME",
    "PlatformCPU",
    "prepare_process_for_verl",
    "prepare_process_for_verl_cpu",
    "prepare_process_for_verl_gpu",
    "register_cpu_engines",
    "shutdown_process_group",
    "use_cpu_platform",
]
