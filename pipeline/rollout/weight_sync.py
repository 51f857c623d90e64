"""GPU weight sync: trainer rank 0 broadcasts the full policy over NCCL into every vLLM engine worker.

vLLM's native weight transfer (vLLM ≥ 0.31: `weight_transfer_config={"backend": "nccl"}`, worker methods
`init_weight_transfer_engine` / `start_weight_update` / `update_weights` / `finish_weight_update`,
vllm/distributed/weight_transfer/nccl_engine.py) does the receiving: each engine worker joins a NCCL group with
the trainer (its rank computed by vLLM from its parallel config, so TP, PP and DP engines all get distinct
ranks), receives one tensor per name of the round's update info, in order, and loads it through the model's own
`load_weights` inside vLLM's layerwise-reload lifecycle (the post-load processing a checkpoint load runs).
Ranks: 0 = trainer rank 0; `rank_offset` + worker rank for each engine (offsets from the driver).

The sender end is ours (`WeightGroup`): vLLM's `trainer_init` communicator plus a client of the group's TCP store
for the round handshake, which closes the ready/receive race:

    receiver (rollout actor, inside its receive call)      sender (trainer rank 0)
    add  vrl/ready/<round>  += its engine's ranks            wait until ready/<round> == world_size - 1
                                                             (timeout: set go/<round> = abort, raise)
    wait go/<round>            (timeout: raise)             set meta/<round> (update info), go/<round> = go
    read meta/<round>; start_weight_update; update_weights   broadcast every tensor in meta order
    finish_weight_update                                    (NCCL: all peers are known to be inside)

A rollout actor runs one call at a time, so while it is inside the receive no generate runs (generation is
paused for the sync), and the trainer never waits in a NCCL call for a worker busy generating: it waits in a
store wait with a timeout, and on timeout both sides give up cleanly with no NCCL call pending. Every store
operation has a timeout (`timeout_s`). Floating tensors travel in the engines' dtype (bf16 on the GPU presets:
half the bytes of the fp32 master copy).

Only GPU machines with vLLM run the NCCL functions (imports are local); the handshake runs anywhere (CPU tests).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

HANDSHAKE_PREFIX = "vrl/weight-sync"
POLL_S = 0.05


class WeightSyncError(RuntimeError):
    """Weights could not reach the rollout engines: a round could not start (a peer did not arrive in time, the
    sender gave up), or the group's TCP store, the NCCL communicator or a call in the sync failed or timed out
    (actors/trainer.py raises it for those). The trainer's own state is intact, so the driver saves it and stops
    with exit 1; the engines cannot be re-joined within the run (an NCCL group takes no new members)."""


@dataclass
class WeightMeta:
    """The round's update info: what the receivers allocate and load, in broadcast order."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def update_info(self) -> dict[str, Any]:
        """vLLM's NCCLWeightTransferUpdateInfo as a dict (what `update_weights` takes)."""
        return {"names": list(self.names), "dtype_names": list(self.dtype_names), "shapes": [list(s) for s in
                                                                                             self.shapes]}


def wire_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a tensor travels in: floating tensors in the engines' dtype, the rest as they are."""
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def to_wire(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.detach().to(wire_dtype(tensor, dtype))


def weight_meta(named_shapes: Iterable[tuple[str, torch.Size | tuple[int, ...], torch.dtype]],
                dtype: torch.dtype | None) -> WeightMeta:
    """Update info from (name, full shape, dtype) triples, with floating dtypes replaced by the wire dtype."""
    names, dtypes, shapes = [], [], []
    for name, shape, tensor_dtype in named_shapes:
        sent = dtype if dtype is not None and tensor_dtype.is_floating_point else tensor_dtype
        names.append(name)
        dtypes.append(str(sent).removeprefix("torch."))
        shapes.append([int(d) for d in shape])
    return WeightMeta(names, dtypes, shapes)


# ---------------------------------------------------------------------------------------------------------
# The round handshake (a TCP store; CPU-testable)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Handshake:
    """One end of the round handshake on the weight group's TCP store. `round` counts sync attempts on this
    end; both ends count alike (a failed round is a round too)."""

    store: Any  # torch.distributed.TCPStore (or anything with add / set / get / check)
    timeout_s: float
    round: int = field(default=0)

    @classmethod
    def connect(cls, host: str, port: int, timeout_s: float) -> Handshake:
        store = torch.distributed.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s),
                                           wait_for_workers=False)
        return cls(store, timeout_s)

    def _key(self, what: str, round_: int) -> str:
        return f"{HANDSHAKE_PREFIX}/{what}/{round_}"

    def open_round(self, receivers: int, meta: WeightMeta) -> None:
        """Sender: wait (≤ timeout) until `receivers` ranks are inside their receive call, then publish the
        update info and let them start. On timeout tell the receivers to give up and raise."""
        self.round += 1
        ready, go = self._key("ready", self.round), self._key("go", self.round)
        deadline = time.monotonic() + self.timeout_s
        arrived = int(self.store.add(ready, 0))
        while arrived < receivers:
            if time.monotonic() > deadline:
                self.store.set(go, b"abort")
                raise WeightSyncError(
                    f"weight sync round {self.round}: {arrived} of {receivers} engine rank(s) entered the receive "
                    f"within {self.timeout_s:g} s (a rollout worker busy or dead); nothing was sent")
            time.sleep(POLL_S)
            arrived = int(self.store.add(ready, 0))
        self.store.set(self._key("meta", self.round), pickle.dumps(meta))
        self.store.set(go, b"go")

    def enter_round(self, ranks: int) -> WeightMeta:
        """Receiver: announce `ranks` engine ranks inside the receive, wait (≤ timeout) for the sender's go,
        return the round's update info."""
        self.round += 1
        self.store.add(self._key("ready", self.round), ranks)
        go = self._key("go", self.round)
        deadline = time.monotonic() + self.timeout_s
        while not self.store.check([go]):
            if time.monotonic() > deadline:
                raise WeightSyncError(f"weight sync round {self.round}: the trainer did not start sending within "
                                      f"{self.timeout_s:g} s")
            time.sleep(POLL_S)
        if self.store.get(go) != b"go":
            raise WeightSyncError(f"weight sync round {self.round}: the trainer gave up waiting for the other "
                                  "rollout workers; nothing was sent")
        return pickle.loads(self.store.get(self._key("meta", self.round)))


# ---------------------------------------------------------------------------------------------------------
# The sender (trainer rank 0)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class WeightGroup:
    """Trainer rank 0's end of the weight-sync group: the NCCL communicator and the round handshake."""

    rank: int
    world_size: int
    communicator: Any  # vllm.distributed.device_communicators.pynccl.PyNcclCommunicator
    handshake: Handshake


def init_weight_group(master_address: str, master_port: int, rank: int, world_size: int, device,
                      timeout_s: float = 600.0) -> WeightGroup:
    """Trainer rank 0 opens the group (its TCP store, then NCCL) while the engines join it through vLLM's
    `init_weight_transfer_engine`; returns once all have joined."""
    if rank != 0:
        raise ValueError("only trainer rank 0 joins the weight group (it is the single sender)")
    # heavy: vLLM: the GPU extra, only this path needs it
    from vllm.distributed.weight_transfer.nccl_common import trainer_init

    torch.cuda.set_device(device)
    communicator = trainer_init({"master_address": master_address, "master_port": master_port,
                                 "world_size": world_size}, rank=0)
    return WeightGroup(rank, world_size, communicator, Handshake.connect(master_address, master_port, timeout_s))


def broadcast_weights(group: WeightGroup, named_tensors: Iterable[tuple[str, torch.Tensor]],
                      dtype: torch.dtype | None, meta: WeightMeta) -> dict[str, float]:
    """One round: handshake, then every (name, tensor) to all receivers in `meta` order, floating tensors cast
    to `dtype` (the engines'). A tensor that disagrees with `meta` raises before it is sent (the receivers then
    wait in NCCL: the group is unusable, as after any failed collective). On any error the remaining tensors are
    still drawn, so the other trainer ranks' all-gathers complete. Returns counts."""
    named_tensors = iter(named_tensors)
    try:
        group.handshake.open_round(group.world_size - 1, meta)
    except WeightSyncError:
        _drain(named_tensors)
        raise
    device = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.current_stream()
    sent = total_bytes = 0
    for name, tensor in named_tensors:
        tensor = to_wire(tensor, dtype).to(device).contiguous()
        if sent >= len(meta.names) or name != meta.names[sent] or list(tensor.shape) != meta.shapes[sent] \
                or str(tensor.dtype).removeprefix("torch.") != meta.dtype_names[sent]:
            expected = (meta.names[sent], meta.dtype_names[sent], meta.shapes[sent]) if sent < len(meta.names) \
                else "nothing more"
            _drain(named_tensors)
            raise WeightSyncError(f"weight {sent}: sending {name!r} {tensor.dtype} {list(tensor.shape)}, the update "
                                  f"info announced {expected}")
        group.communicator.broadcast(tensor, src=0, stream=stream)
        sent += 1
        total_bytes += tensor.numel() * tensor.element_size()
    if sent != len(meta.names):
        raise WeightSyncError(f"sent {sent} weights, the update info announced {len(meta.names)}")
    torch.cuda.synchronize()
    return {"tensors": float(sent), "bytes": float(total_bytes)}


def _drain(named_tensors) -> None:
    # The other trainer ranks are in the same per-tensor all-gathers (FSDP2): finish them, or those ranks hang
    # until the collective timeout.
    for _ in named_tensors:
        pass


def destroy_weight_group(group: WeightGroup | None) -> None:
    if group is not None and group.communicator is not None:
        destroy = getattr(group.communicator, "destroy", None)
        if callable(destroy):
            destroy()
        group.communicator = None
