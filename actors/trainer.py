"""The GRPO trainer as a Ray worker group: one `TrainerRank` actor per FSDP rank, driven by `TrainerGroup`.

The ranks form one torch.distributed group (gloo on CPU through our verl CPU platform; nccl on GPUs) and run
verl's FSDP2 `TrainingWorker` in lock-step; all the work is `pipeline.training.rank.RankTrainer`. The driver
holds a `TrainerGroup` and calls:

    trainer = TrainerGroup(cfg.trainer, model_path, group_size)
    meta = trainer.resume(run_dir)                       # None on a fresh run; else meta["extra"] = your state
    metrics = trainer.update(groups)                     # list[list[Sample]], scored; version += 1
    trainer.sync_weights(rollout_workers)                # object store: ray.put once, every worker load_weights
                                                         # nccl: rank 0 broadcasts into the vLLM engines
    trainer.save_checkpoint(run_dir, extra={...})        # <run_dir>/checkpoints/step_<version>/
    trainer.shutdown()

Every `ray.get` has a timeout: `trainer.start_timeout_s` for bring-up, `trainer.call_timeout_s` otherwise.
Checkpoints are written by the ranks themselves, so the run directory must be on storage every trainer node
and the driver share (a PVC / NFS on a cluster; trivially true on one machine).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from transformers import AutoConfig

from pipeline.distributed import free_port
from pipeline.models import load_processor
from pipeline.placement import NODE_GROUP_LABEL
from pipeline.rollout.weight_sync import WeightSyncError
from pipeline.training import checkpoint
from pipeline.training.batch import GRPORollout, build_grpo_batch, shard_for_rank
from pipeline.training.config import TrainerConfig
from pipeline.training.metrics import batch_stats, combine_rank_metrics
from pipeline.training.rank import RankTrainer

log = logging.getLogger(__name__)


class TrainerError(RuntimeError):
    """The trainer group could not start or a call on its ranks failed or timed out."""


class TrainerDied(TrainerError):
    """A rank's actor died (killed, OOM, node lost): the group is unusable, `restart` it from a checkpoint."""


@contextmanager
def _weight_sync_errors(what: str):
    """A failure in the NCCL weight path (an exception raised on a rank or a rollout worker: the TCP store, NCCL,
    the handshake; or a call that did not answer in time) → WeightSyncError naming it. A rank that died is
    still TrainerDied: the group restarts from its checkpoint."""
    try:
        yield
    except TrainerDied:
        raise
    except (TrainerError, ray.exceptions.RayTaskError) as e:
        cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
        raise WeightSyncError(f"{what} failed: {type(cause).__name__}: {cause}") from e


@ray.remote
class TrainerRank:
    """Thin Ray shell around one `RankTrainer` (one FSDP rank = one process)."""

    def __init__(self, rank: int, world_size: int, model_path: str, cfg: TrainerConfig, group_size: int):
        self.trainer = RankTrainer(rank, world_size, model_path, cfg, group_size)

    def ready(self) -> bool:
        return True

    def rendezvous_address(self) -> tuple[str, int]:
        """Rank 0 hosts the process group's store: this node's address and a port free on it."""
        address = ray.util.get_node_ip_address()
        return address, free_port(address)

    def setup(self, master_addr: str, master_port: int) -> dict[str, float]:
        return self.trainer.setup(master_addr, master_port)

    def update(self, shard, global_batch_size: int) -> dict[str, float]:
        return self.trainer.update(shard, global_batch_size)

    def compute_log_probs(self, shard, reference: bool = False):
        return self.trainer.compute_log_probs(shard, reference)

    def init_weight_group(self, master_addr: str, master_port: int, world_size: int) -> None:
        self.trainer.init_weight_group(master_addr, master_port, world_size)

    def broadcast_weights(self, dtype: str | None) -> dict[str, float]:
        return self.trainer.broadcast_weights(dtype)

    def export_weights(self, publish: bool) -> list | None:
        """Gather the full state dict (a collective); the publishing rank puts it in the object store once.

        The ObjectRef is returned inside a list so that Ray hands back the reference, not the tensors: the
        driver never copies the weights, each rollout worker fetches them straight from the object store.
        """
        state_dict = self.trainer.export_weights()
        return [ray.put(state_dict)] if publish else None

    def save_checkpoint(self, path: str, step: int) -> None:
        self.trainer.save_checkpoint(path, step)

    def load_checkpoint(self, path: str) -> None:
        self.trainer.load_checkpoint(path)

    def shutdown(self) -> None:
        self.trainer.shutdown()


class TrainerGroup:
    """Driver-side handle on the trainer ranks. Not thread-safe: one driver loop calls it."""

    def __init__(
        self,
        cfg: TrainerConfig,
        model_path: str | Path,
        group_size: int,
        run_config: dict[str, Any] | None = None,
        weight_sync: str = "object_store",
        weight_dtype: str | None = None,
    ):
        """Start `cfg.ranks` actors (one placement group), rendezvous, build the engines.

        `group_size` is the GRPO group size (sampling.n); `run_config` (the whole run config as a dict) is
        stored in every checkpoint. `weight_sync` is `rollout.weight_sync`: "object_store" (a state dict through
        Ray) or "nccl" (rank 0 broadcasts into the rollout's vLLM engines, sent as `weight_dtype`, the
        rollout model's dtype).
        """
        if weight_sync not in ("object_store", "nccl"):
            raise ValueError(f"unknown weight_sync {weight_sync!r} (object_store, nccl)")
        if weight_sync == "nccl" and cfg.num_gpus_per_rank <= 0:
            raise TrainerError(
                "rollout.weight_sync=nccl needs GPU trainer ranks (trainer.num_gpus_per_rank > 0): trainer rank 0 "
                "broadcasts from its GPU. On CPU use rollout.weight_sync=object_store"
            )
        self.weight_sync = weight_sync
        self.weight_dtype = weight_dtype
        self._weight_group_members: list | None = None  # the rollout workers the NCCL group was built with
        self.cfg = cfg
        # Absolute: the rank processes need not share the driver's working directory.
        self.model_path = str(Path(model_path).expanduser().resolve())
        self.group_size = group_size
        self.run_config = run_config or {}
        self.version = 0  # policy updates done; the rollout side's `policy_version` follows it
        # The driver builds each batch once (then shards it): it needs the processor and config, not weights.
        self.processor = load_processor(self.model_path)
        self.hf_config = AutoConfig.from_pretrained(self.model_path)
        self.setup_metrics: dict[str, float] = {}

        started = time.perf_counter()
        bundle = {"CPU": cfg.num_cpus_per_rank}
        if cfg.num_gpus_per_rank > 0:
            bundle["GPU"] = cfg.num_gpus_per_rank
        # PACK: ranks share a node when they fit (cheaper collectives), spread when they must.
        # node_group: every bundle on the trainer's KubeRay worker group (Ray node label ray.io/node-group).
        selector = {NODE_GROUP_LABEL: cfg.node_group} if cfg.node_group else {}
        self._placement = placement_group([dict(bundle) for _ in range(cfg.ranks)], strategy="PACK",
                                          bundle_label_selector=[dict(selector) for _ in range(cfg.ranks)])
        try:
            ray.get(self._placement.ready(), timeout=cfg.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self._placement)
            raise TrainerError(
                f"trainer: {cfg.ranks} rank(s) of {bundle} could not be placed within {cfg.start_timeout_s:g} s "
                "(the cluster lacks the resources, or other actors hold them): lower trainer.ranks / "
                "trainer.num_cpus_per_rank / trainer.num_gpus_per_rank"
            ) from None

        env_vars = {
            "VERL_LOGGING_LEVEL": os.environ.get("VERL_LOGGING_LEVEL", "WARN"),
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(cfg.threads_per_rank or max(1, int(cfg.num_cpus_per_rank))),
        }
        self.ranks = [
            TrainerRank.options(
                num_cpus=cfg.num_cpus_per_rank,
                num_gpus=cfg.num_gpus_per_rank,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._placement, placement_group_bundle_index=rank
                ),
                runtime_env={"env_vars": env_vars},
            ).remote(rank, cfg.ranks, self.model_path, cfg, group_size)
            for rank in range(cfg.ranks)
        ]
        try:
            self._get([r.ready.remote() for r in self.ranks], "start", cfg.start_timeout_s)
            master_addr, master_port = self._get(
                [self.ranks[0].rendezvous_address.remote()], "rendezvous", cfg.start_timeout_s
            )[0]
            per_rank = self._get(
                [r.setup.remote(master_addr, master_port) for r in self.ranks], "setup", cfg.start_timeout_s
            )
        except BaseException:
            self.shutdown(graceful=False)  # a rank stuck in the rendezvous would not answer anyway
            raise
        self.setup_metrics = {
            "engine_build_s": max(m["engine_build_s"] for m in per_rank),
            "start_s": time.perf_counter() - started,
        }
        log.info(
            "trainer: %d rank(s) up at %s:%d in %.1f s",
            cfg.ranks,
            master_addr,
            master_port,
            self.setup_metrics["start_s"],
        )

    # -----------------------------------------------------------------------------------------------------
    # Remote calls
    # -----------------------------------------------------------------------------------------------------
    def _get(self, refs: list, what: str, timeout_s: float | None = None) -> list:
        """ray.get with the configured timeout; a timeout names the ranks that did not answer."""
        timeout_s = self.cfg.call_timeout_s if timeout_s is None else timeout_s
        # Wait as results come, not in order: a rank that died is reported at once, while the ranks still
        # alive would sit in a collective with it until the timeout.
        deadline, pending = time.monotonic() + timeout_s, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                late = sorted(refs.index(ref) for ref in pending)
                raise TrainerError(
                    f"trainer {what}: call(s) {late} of {len(refs)} (by rank / worker index) did not answer within "
                    f"{timeout_s:g} s (trainer.call_timeout_s / trainer.start_timeout_s). A rank that missed a "
                    "collective leaves the group unusable: shut it down and resume from the latest checkpoint"
                )
            try:
                ray.get(done[0], timeout=0)
            except ray.exceptions.RayActorError as e:
                raise TrainerDied(f"trainer {what}: call {refs.index(done[0])} of {len(refs)} (by rank / worker "
                                  f"index): its actor died ({type(e).__name__})") from e
        return ray.get(refs, timeout=0)

    def _shards(self, batch) -> list:
        world = len(self.ranks)
        if len(batch) % world:
            raise ValueError(
                f"a batch of {len(batch)} samples does not split evenly over {world} trainer ranks "
                "(every FSDP rank must run the same number of passes): make prompts × n a multiple of the ranks"
            )
        return [shard_for_rank(batch, rank, world) for rank in range(world)]

    def _build_batch(self, samples: list) -> Any:
        rollouts = [GRPORollout.from_sample(s) for s in samples]
        return build_grpo_batch(
            rollouts,
            self.processor,
            self.hf_config,
            temperature=self.cfg.temperature,
            norm_adv_by_std_in_grpo=self.cfg.norm_adv_by_std_in_grpo,
        )

    # -----------------------------------------------------------------------------------------------------
    # Training
    # -----------------------------------------------------------------------------------------------------
    def update(self, groups: list[list]) -> dict[str, float]:
        """One GRPO update on complete, scored groups (list of groups of `Sample`s). Returns metrics.

        The batch is built once here and sharded over the ranks; loss, grad_norm and lr are global (rank 0),
        token means are combined over ranks, `rollout_ratio_*` compare the trainer's policy before the update
        with the log-probs the rollout recorded (staleness and numeric mismatch).
        """
        started = time.perf_counter()
        samples = [s for group in groups for s in group]
        if not samples:
            raise ValueError("update() needs at least one group")
        batch = self._build_batch(samples)
        built = time.perf_counter()
        shards = self._shards(batch)
        per_rank = self._get(
            [r.update.remote(shard, len(batch)) for r, shard in zip(self.ranks, shards)], "update"
        )
        self.version += 1
        metrics = combine_rank_metrics(per_rank)
        metrics.update(batch_stats(batch))
        metrics["batch_build_s"] = built - started
        metrics["update_wall_s"] = time.perf_counter() - started
        metrics["version"] = float(self.version)
        # Versions of the policies that sampled this batch: how stale the rollouts were.
        versions = [s.policy_version for s in samples if s.policy_version is not None]
        if versions:
            metrics["staleness_max"] = float(self.version - 1 - min(versions))
        return metrics

    def compute_log_probs(self, samples: list, reference: bool = False) -> list[list[float]]:
        """Per-token log-probs of each sample's response under the trainer's current policy (or reference).

        The samples need prompt and response tokens, not rewards. Handy to check a rollout worker against the
        trainer after a weight sync, or to measure how stale a batch is.
        """
        rollouts = [
            GRPORollout(
                messages=s.messages,
                images=s.prompt_images,
                response_ids=s.response_ids,
                rollout_log_probs=s.response_logprobs or [0.0] * len(s.response_ids),
                reward=0.0,
                group_id=s.prompt_id,
                prompt_ids=s.prompt_ids,
            )
            for s in samples
        ]
        batch = build_grpo_batch(rollouts, self.processor, self.hf_config, temperature=self.cfg.temperature)
        outputs = self._get(
            [
                r.compute_log_probs.remote(shard, reference)
                for r, shard in zip(self.ranks, self._shards(batch))
            ],
            "compute_log_probs",
        )
        log_probs = [row for out in outputs for row in out]
        return [lp[: len(s.response_ids)].tolist() for lp, s in zip(log_probs, samples)]

    # -----------------------------------------------------------------------------------------------------
    # Weights
    # -----------------------------------------------------------------------------------------------------
    def publish_weights(self) -> ray.ObjectRef:
        """The full HF-named policy state dict, put in the object store once (by rank 0). Returns its ref."""
        results = self._get(
            [r.export_weights.remote(rank == 0) for rank, r in enumerate(self.ranks)], "export"
        )
        return results[0][0]

    def policy_state_dict(self) -> dict:
        """The full policy state dict in this process (tests, export). Weight sync should use `sync_weights`."""
        return self._get([self.publish_weights()], "fetch weights")[0]

    def sync_weights(self, rollout_workers: list, timeout_s: float | None = None) -> dict[str, float]:
        """Ship the current weights to every rollout worker, which then reports this `version`.

        object_store: the state dict crosses the object store once (workers on the trainer's node read it from
        shared memory) and each worker runs `load_weights(ref, version)`. nccl: see `_sync_weights_nccl`.
        Returns timings.
        """
        if self.weight_sync == "nccl":
            return self._sync_weights_nccl(rollout_workers, timeout_s)
        started = time.perf_counter()
        ref = self.publish_weights()
        published = time.perf_counter()
        self._get(
            [w.load_weights.remote(ref, self.version) for w in rollout_workers], "weight sync", timeout_s
        )
        del ref  # the object is freed once the workers are done with it
        return {
            "weight_export_s": published - started,
            "weight_sync_s": time.perf_counter() - started,
            "synced_version": float(self.version),
        }

    def init_weight_group(self, rollout_workers: list) -> None:
        """Build the NCCL weight group with these (idle) rollout workers: the driver calls it at start-up,
        before the stream keeps the workers busy (vLLM's store waits at most 300 s for every member to join,
        and a worker inside a long `generate` would join late). One group: trainer rank 0 is rank 0,
        tensor-parallel rank t of worker i is 1 + offset_i + t."""
        timeout_s = self.cfg.start_timeout_s
        sizes = self._get([w.weight_group_ranks.remote() for w in rollout_workers], "weight group sizes", timeout_s)
        if not all(sizes):
            raise TrainerError("rollout.weight_sync=nccl needs rollout.backend=vllm on every rollout worker")
        world_size = 1 + sum(sizes)
        address, port = self._get([self.ranks[0].rendezvous_address.remote()], "weight group address", timeout_s)[0]
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        with _weight_sync_errors("building the NCCL weight group"):
            self._get(
                [self.ranks[0].init_weight_group.remote(address, port, world_size)]
                + [w.init_weight_group.remote(address, port, offset, world_size)
                   for w, offset in zip(rollout_workers, offsets)],
                "weight group init",
                timeout_s,
            )
        self._weight_group_members = list(rollout_workers)
        log.info("trainer: NCCL weight group of %d rank(s) at %s:%d", world_size, address, port)

    def _sync_weights_nccl(self, rollout_workers: list, timeout_s: float | None) -> dict[str, float]:
        """All trainer ranks gather the full policy tensor by tensor (FSDP2), rank 0 broadcasts each tensor to
        every vLLM engine worker as it comes (`collective_rpc("receive_weights")` on the rollout side); the
        workers adopt `version`. The group is built on first use with these workers; other workers later are an
        error (an NCCL group cannot grow)."""
        started = time.perf_counter()
        if self._weight_group_members is None or self._weight_group_members != list(rollout_workers):
            if self._weight_group_members is not None:
                raise WeightSyncError("the rollout workers changed after the NCCL weight group was built")
            self.init_weight_group(rollout_workers)  # a restarted trainer group: the stream is stopped
        # The receives are queued first, in one go: each runs right after the generate call its worker is in
        # (at most rollout.timeout_s), and no stream thread can slip another generate in before it (as it
        # could between a `ready` probe and the receive) while the trainer ranks wait in the broadcast.
        receives = [w.receive_weights.remote(self.version) for w in rollout_workers]
        sends = [r.broadcast_weights.remote(self.weight_dtype) for r in self.ranks]
        with _weight_sync_errors(f"the NCCL weight sync of version {self.version}"):
            results = self._get(sends + receives, "weight sync (nccl)", timeout_s)
        sent = results[0]
        return {
            "weight_sync_s": time.perf_counter() - started,
            "weight_sync_tensors": sent["tensors"],
            "weight_sync_bytes": sent["bytes"],
            "synced_version": float(self.version),
        }

    # -----------------------------------------------------------------------------------------------------
    # Checkpoints
    # -----------------------------------------------------------------------------------------------------
    def save_checkpoint(self, run_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Save policy weights, optimizer, lr scheduler, RNG states, step and config to
        <run_dir>/checkpoints/step_<version>/ and point `latest` at it last. `extra` (JSON-serialisable: the
        dataloader position, ...) comes back from `load_checkpoint` / `resume` as meta["extra"].
        """
        started = time.perf_counter()
        run_dir = Path(run_dir).expanduser().resolve()  # the ranks write here too, from their own cwd
        step = self.version
        staging = checkpoint.begin_save(run_dir, step)
        policy_dir = staging / checkpoint.POLICY_DIR
        self._get([r.save_checkpoint.remote(str(policy_dir), step) for r in self.ranks], "save_checkpoint")
        meta = {
            "version": self.version,
            "world_size": len(self.ranks),
            "model_path": self.model_path,
            "trainer_config": self.cfg.model_dump(mode="json"),
            "config": self.run_config,
            "extra": extra or {},
        }
        path = checkpoint.commit(run_dir, staging, step, meta)
        if self.cfg.keep_checkpoints:
            checkpoint.prune(run_dir, self.cfg.keep_checkpoints)
        log.info("trainer: checkpoint %s saved in %.1f s", path, time.perf_counter() - started)
        return path

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore a checkpoint directory (step_<N>) into all ranks; sets `version`. Returns its meta."""
        path = Path(path).expanduser().resolve()
        meta = checkpoint.read_meta(path)
        if meta["world_size"] != len(self.ranks):
            raise checkpoint.CheckpointError(
                f"{path} was saved by {meta['world_size']} trainer rank(s); this group has {len(self.ranks)}. "
                "verl's checkpoints are per-rank shards: resume with the same trainer.ranks"
            )
        policy_dir = Path(path) / checkpoint.POLICY_DIR
        self._get([r.load_checkpoint.remote(str(policy_dir)) for r in self.ranks], "load_checkpoint")
        self.version = int(meta["version"])
        return meta

    def resume(self, run_dir: str | Path) -> dict[str, Any] | None:
        """Load <run_dir>/checkpoints/latest if there is one; returns its meta, or None for a fresh run."""
        latest = checkpoint.find_latest(run_dir)
        return None if latest is None else self.load_checkpoint(latest)

    # -----------------------------------------------------------------------------------------------------
    def shutdown(self, graceful: bool = True) -> None:
        """Tear the group down (idempotent). Ranks close their process group, then the actors are killed."""
        ranks, self.ranks = getattr(self, "ranks", []), []
        if ranks and graceful:
            try:
                ray.get([r.shutdown.remote() for r in ranks], timeout=30)
            except Exception as e:  # noqa: BLE001 - a dead or hung rank is killed below anyway
                log.warning("trainer: clean shutdown failed (%s); killing the ranks", e)
        for r in ranks:
            ray.kill(r)
        placement = getattr(self, "_placement", None)
        if placement is not None:
            remove_placement_group(placement)
            self._placement = None
