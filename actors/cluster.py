"""Ray bring-up: join the cluster the user points at, or start a local one sized to this machine.

Also the one check that keeps a run from hanging forever: Ray queues an actor whose resource request no node
can satisfy and never says so. Every request is checked against the cluster before any actor is created.
"""

from __future__ import annotations

import logging
import os

import ray

from pipeline.config import RayConfig
from pipeline.placement import NODE_GROUP_LABEL, ActorRequest, NodeGroup, plan

__all__ = ["ActorRequest", "ResourceError", "check_fits", "connect", "live_node_groups"]

log = logging.getLogger(__name__)


class ResourceError(RuntimeError):
    """The cluster cannot host what the configuration asks for."""


def connect(cfg: RayConfig) -> str:
    """Connect to Ray and return how: "address <addr>" or "local (N CPUs)".

    Order: `ray.address` from config ("local" forces a fresh local cluster), then $RAY_ADDRESS (set by
    `ray job submit` and KubeRay), then a cluster already running on this machine, else a new local one.
    """
    if ray.is_initialized():
        return "already connected"
    common = {"log_to_driver": True, "logging_level": logging.WARNING}
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, **common)
        return f"address {address}"
    if address != "local":
        try:
            ray.init(address="auto", **common)
            return "running cluster on this machine"
        except ConnectionError:
            pass  # nothing running: start our own below
        except ray.exceptions.AuthenticationError as e:
            raise ResourceError(
                "a Ray cluster is running on this machine with token authentication, and this process has no "
                "token: `export RAY_AUTH_MODE=token` (token in ~/.ray/auth_token or $RAY_AUTH_TOKEN), or "
                f"start a separate local cluster with ray.address=local. Ray said: {e.message}"
            ) from None
    num_cpus = cfg.num_cpus or os.cpu_count() or 1
    ray.init(num_cpus=num_cpus, num_gpus=cfg.num_gpus or 0, include_dashboard=False, **common)
    return f"local ({num_cpus} CPUs, {cfg.num_gpus or 0} GPUs)"


def live_node_groups() -> list[NodeGroup]:
    """The alive nodes of the connected cluster, one group of one node each, named by their
    `ray.io/node-group` label (KubeRay's worker group; "node" where there is none, e.g. a local cluster)."""
    groups = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources") or {}
        labels = node.get("Labels") or {}
        groups.append(NodeGroup(name=labels.get(NODE_GROUP_LABEL, "node"), replicas=1, cpus=res.get("CPU", 0.0),
                                gpus=res.get("GPU", 0.0), memory_bytes=int(res.get("memory", 0))))
    return groups


def check_fits(requests: list[ActorRequest], groups: list[NodeGroup] | None = None) -> None:
    """Raise ResourceError naming the actor group and resource that cannot be placed.

    Every actor here is long-lived, so all must be up at once: the same first-fit as the --dry-run plan
    (pipeline/placement.py), over the cluster's alive nodes (or `groups`), honouring each request's
    node_group.
    """
    result = plan(requests, live_node_groups() if groups is None else groups)
    if result.problems:
        raise ResourceError(
            "the cluster cannot host this configuration (Ray would wait forever):\n  - "
            + "\n  - ".join(result.problems)
            + "\nLower the replica counts / per-replica resources in the config, or add nodes."
        )

