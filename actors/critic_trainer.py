"""Critic SFT on Ray: one `CriticTrainerRank` actor per DeepSpeed data-parallel rank, run by `train_on_ray`.

    summary = train_on_ray(load_train_config("critic.yaml"))   # rank 0's train_rank summary

All the work is `pipeline.critic.training.sft.train_rank`; this module places the ranks, finds the
rendezvous address, waits and cleans up. Why our own worker group and not Ray Train's TorchTrainer:
* it is what the policy trainer does (`actors/trainer.py`: a placement group of rank actors that set the
  torch.distributed env themselves), so one mechanism, one set of failure modes, one way to read the logs;
* every wait has our own timeout (`timeout_s`, through `ray.wait`/`ray.get`), and a failed rank is seen at
  once and its peers killed, rather than left in a collective until a backend timeout;
* DeepSpeed writes and resumes its own (sharded) checkpoints and the final HF directory; Ray Train's
  checkpoint/report machinery and its storage syncing would only duplicate that.
Checkpoints are written by the ranks themselves: `output_dir` must be storage every rank's node sees.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from pipeline.critic.training.config import CriticTrainConfig
from pipeline.critic.training.sft import check_manifest, train_rank
from pipeline.distributed import free_port

log = logging.getLogger(__name__)


@ray.remote
class CriticTrainerRank:
    """One rank (one process). Resources come from `.options(num_cpus=..., num_gpus=...)`."""

    def __init__(self, cfg: CriticTrainConfig, rank: int, world_size: int):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size

    def ready(self) -> bool:
        return True

    def rendezvous_address(self) -> tuple[str, int]:
        """Rank 0 hosts the process group's store: this node's address and a port free on it."""
        address = ray.util.get_node_ip_address()
        return address, free_port(address)

    def train(self, master_addr: str, master_port: int) -> dict[str, Any]:
        return train_rank(self.cfg, self.rank, self.world_size, master_addr, master_port)


def train_on_ray(cfg: CriticTrainConfig) -> dict[str, Any]:
    """Run `cfg.ranks` ranks to the end; returns rank 0's summary. A rank's exception is re-raised (Ray
    keeps its type: a bad row is still a CriticDataError); TimeoutError past `cfg.timeout_s`. The actors are
    killed in every case."""
    check_manifest(cfg)  # a set written with other limits fails here, before any actor starts
    deadline = time.monotonic() + cfg.timeout_s

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"critic SFT did not finish within timeout_s={cfg.timeout_s:g} s")
        return remaining

    bundle = {"CPU": cfg.num_cpus_per_rank, **({"GPU": cfg.num_gpus_per_rank} if cfg.num_gpus_per_rank else {})}
    group = placement_group([dict(bundle) for _ in range(cfg.ranks)], strategy="PACK")  # ranks close together
    ranks: list = []
    try:
        try:
            ray.get(group.ready(), timeout=left())
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"critic SFT: {cfg.ranks} rank(s) of {bundle} could not be placed within "
                               f"timeout_s={cfg.timeout_s:g} s (lower ranks / num_cpus_per_rank / "
                               "num_gpus_per_rank)") from None
        env_vars = {"OMP_NUM_THREADS": str(max(1, int(cfg.num_cpus_per_rank))), "TOKENIZERS_PARALLELISM": "false",
                    "WANDB_SILENT": "true", **({} if cfg.num_gpus_per_rank else {"DS_ACCELERATOR": "cpu"})}
        ranks = [CriticTrainerRank.options(
            num_cpus=cfg.num_cpus_per_rank, num_gpus=cfg.num_gpus_per_rank, runtime_env={"env_vars": env_vars},
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group,
                                                                 placement_group_bundle_index=r),
        ).remote(cfg, r, cfg.ranks) for r in range(cfg.ranks)]
        ray.get([r.ready.remote() for r in ranks], timeout=left())
        master_addr, master_port = ray.get(ranks[0].rendezvous_address.remote(), timeout=left())
        log.info("critic SFT: %d rank(s), rendezvous %s:%d", cfg.ranks, master_addr, master_port)
        refs = [r.train.remote(master_addr, master_port) for r in ranks]
        pending = list(refs)
        while pending:  # one at a time: the first rank to fail ends the job (its peers would hang)
            done, pending = ray.wait(pending, num_returns=1, timeout=left())
            for ref in done:
                ray.get(ref)  # raises the rank's exception
        return ray.get(refs[0], timeout=left())
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(f"critic SFT did not finish within timeout_s={cfg.timeout_s:g} s") from None
    finally:
        for r in ranks:  # also on success: the ranks hold their process's memory until killed
            ray.kill(r, no_restart=True)
        remove_placement_group(group)
