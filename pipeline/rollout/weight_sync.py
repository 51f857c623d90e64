"""GPU weight sync: trainer rank 0 broadcasts the full policy over NCCL into every vLLM engine worker.

The group is outside torch.distributed (the trainer's FSDP group and vLLM's own TP groups are untouched): a
vLLM `StatelessProcessGroup` (a TCP store for small objects) plus a `PyNcclCommunicator` for the tensors, as in
vLLM's `examples/offline_inference/rlhf_utils.py` (vllm-project/vllm: `stateless_init_process_group`,
`WorkerExtension.init_weight_update_group` / `update_weight`) and OpenRLHF's vLLM worker extension.
Ranks: 0 = trainer rank 0; 1 + i * tp + t = tensor-parallel rank t of rollout engine i.

One sync is a stream of (header, tensor) pairs: the header (name, dtype, shape) goes through the store, the
tensor through NCCL, and a `None` header ends the stream. Receivers load what arrives in buckets through the
model's own `load_weights` (it maps HF checkpoint names onto vLLM's fused/sharded layout), so no side needs to
know the full name list in advance and the trainer never holds more than one gathered tensor.

Only GPU machines with vLLM run this module's functions (imports are local); CPU code may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

# Receivers hand tensors to `load_weights` in buckets of about this size: few calls, bounded extra memory.
LOAD_BUCKET_BYTES = 512 * 1024 * 1024


@dataclass
class WeightGroup:
    """One end of the weight-sync group: the metadata channel and the NCCL communicator."""

    rank: int
    world_size: int
    store_group: Any  # vllm.distributed.utils.StatelessProcessGroup
    communicator: Any  # vllm.distributed.device_communicators.pynccl.PyNcclCommunicator


def init_weight_group(master_address: str, master_port: int, rank: int, world_size: int, device) -> WeightGroup:
    """Join the weight-sync group (all members call this; it returns once all have joined)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    store_group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank,
                                               world_size=world_size)
    return WeightGroup(rank, world_size, store_group, PyNcclCommunicator(store_group, device=device))


def broadcast_weights(group: WeightGroup, named_tensors: Iterable[tuple[str, torch.Tensor]],
                      dtype: torch.dtype | None = None) -> dict[str, float]:
    """Send every (name, tensor) to all receivers (called on rank 0 only). Floating tensors are cast to
    `dtype` first (the engines' dtype: half the bytes of an fp32 master copy). Returns counts."""
    if group.rank != 0:
        raise ValueError("only rank 0 of the weight group sends")
    device = torch.device("cuda", torch.cuda.current_device())
    tensors = total_bytes = 0
    for name, tensor in named_tensors:
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensor = tensor.to(device).contiguous()
        group.store_group.broadcast_obj((name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)),
                                        src=0)
        group.communicator.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        tensors += 1
        total_bytes += tensor.numel() * tensor.element_size()
    group.store_group.broadcast_obj(None, src=0)
    torch.cuda.synchronize()
    return {"tensors": float(tensors), "bytes": float(total_bytes)}


def receive_weights(group: WeightGroup, device, load: Callable[[list[tuple[str, torch.Tensor]]], Any],
                    bucket_bytes: int = LOAD_BUCKET_BYTES) -> int:
    """Receive one broadcast stream and pass it to `load` in buckets. Returns the number of tensors."""
    bucket: list[tuple[str, torch.Tensor]] = []
    bucket_size = received = 0
    while True:
        header = group.store_group.broadcast_obj(None, src=0)
        if header is None:
            break
        name, dtype, shape = header
        tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        group.communicator.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        bucket.append((name, tensor))
        bucket_size += tensor.numel() * tensor.element_size()
        received += 1
        if bucket_size >= bucket_bytes:
            torch.cuda.current_stream().synchronize()
            load(bucket)
            bucket, bucket_size = [], 0
    torch.cuda.current_stream().synchronize()
    if bucket:
        load(bucket)
    return received


def destroy_weight_group(group: WeightGroup | None) -> None:
    if group is not None:
        group.communicator = None
        group.store_group = None
