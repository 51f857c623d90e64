"""What a rank process needs before joining a process group without a launcher (torchrun, deepspeed): a free
rendezvous port and the env vars torch.distributed, verl and DeepSpeed read. Light on purpose (no torch): the
verl trainer ranks and the critic's DeepSpeed ranks both use it, and importing verl costs 4 s per process."""

from __future__ import annotations

import os
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (bind the address other ranks will connect to, not just loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def set_rank_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """RANK, WORLD_SIZE, MASTER_ADDR/PORT; one device per process (Ray gives each rank its own), so LOCAL_RANK 0.
    Without these DeepSpeed tries MPI discovery."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
