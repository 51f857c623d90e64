"""The driver: `python pipeline/main.py [--config PRESET] [key.path=value ...]`.

Same command on a laptop (local Ray, tiny models, CPU) and on a cluster (`ray job submit -- python
pipeline/main.py ...`, which sets RAY_ADDRESS). This is the one place that wires actors together; read it top
to bottom:

    prompts ─► rollout workers ─► render pool ─► reward pool ─► complete GRPO groups ─► trainer ─► weights
       ▲                                                                                              │
       └────────────────────────────── weight sync (new policy version) ◄────────────────────────────┘

`main` parses the command line; `run` is the recipe, one `Driver` method per step, in the order they run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    # Run as a script, Python puts pipeline/ itself first on sys.path, where our subpackages (data, evaluate,
    # models, ...) would shadow top-level modules of the same name. Put the repository root there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.config import REPO_ROOT, Config, config_to_dict, dump_resolved, load_config
from pipeline.runlog.layout import RunLayout
from pipeline.runlog.tracking import Tracker, git_commit, log, setup_console_logging
from pipeline.schema import ConfigError
from pipeline.shutdown import StopSignals

if TYPE_CHECKING:  # annotations only: the steps import these when a run needs them
    from collections.abc import Iterator

    from actors.chaos import ChaosMonkey
    from actors.render_pool import RenderPool
    from actors.reward import RewardPool
    from actors.rollout import RolloutPool
    from actors.trainer import TrainerGroup
    from pipeline.data.loader import PromptLoader
    from pipeline.loop.streaming import StreamingScheduler
    from pipeline.sample import Sample


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pipeline/main.py",
        description="Visual-ERM RL pipeline driver. Overrides are key.path=value, e.g. run.total_steps=10.",
    )
    parser.add_argument("--config", default=None, help="YAML preset: a path or a name in configs/ "
                        "(default: configs/default.yaml, the embedded CPU run)")
    parser.add_argument("--dry-run", action="store_true", help="print where every actor group would be placed "
                        "on the cluster and exit: 0 if it fits, 3 if not (no Ray, no actors)")
    parser.add_argument("--cluster", default=None, help="KubeRay RayCluster/RayJob manifest for --dry-run "
                        "(default: the one the preset names in its `# cluster:` header line)")
    parser.add_argument("--print-config", action="store_true", help="print the fully resolved config (YAML: "
                        "defaults, preset and overrides) and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_resolved(cfg, args.config or "configs/default.yaml"), end="")
        return 0
    if args.dry_run:
        from pipeline.placement import dry_run  # only --dry-run needs it (a plan on paper: no Ray, no actors)

        code, report = dry_run(cfg, args.config, args.cluster, REPO_ROOT)
        print(report, file=sys.stdout if code == 0 else sys.stderr)
        return code
    from pipeline import console  # only a run needs it: its progress bars and their log filter

    policy = console.setup(cfg.logging.progress)  # before the logging handler: it writes through the filter
    setup_console_logging(cfg.logging.level)
    try:
        return run(cfg)
    except ConfigError as e:  # raised by components that check their settings at start-up
        log.error("config error: %s", e)
        return 2
    finally:
        policy.restore()


def run(cfg: Config) -> int:
    """Train as `cfg` says, step by step; returns the exit code: 0 done, 1 a stage failed beyond its retries (the
    run saved a final checkpoint first) or an unexpected error, 3 the cluster cannot host this configuration,
    130 / 143 stopped by SIGINT / SIGTERM (checkpoint saved if training had started)."""
    # Ray loads only when a run starts (keeps --help, --dry-run and --print-config fast)
    from actors.cluster import ResourceError
    from pipeline.rollout.weight_sync import WeightSyncError  # torch: only a run needs it

    driver = Driver(cfg)  # the run directory's tracker, and our signal handlers
    exit_code = 1  # an unexpected error: teardown still runs and the tracker records the run as failed
    try:
        driver.connect()
        driver.check_placement()
        driver.prepare_data()
        driver.prepare_models()
        driver.start_actors()
        driver.resume()
        driver.evaluate_baseline()
        driver.start_stream()
        driver.train()
        driver.save_final_checkpoint()
        driver.evaluate_final()
        exit_code = driver.report()
    except ResourceError as e:
        log.error("%s", e)
        exit_code = 3
    except WeightSyncError as e:  # before training (the start-up group, a resume's sync): nothing to save yet
        log.error("run stopped: %s", e)
        exit_code = 1
    except KeyboardInterrupt:  # a signal before training started, or a second one: no checkpoint
        log.warning("%s: aborted without saving a checkpoint (earlier ones stay valid)", driver.stop.name)
        exit_code = driver.stop.exit_code
    finally:
        driver.close(exit_code)
    return exit_code


class Driver:
    """One run's state and its steps, in the order `run` calls them. Each step imports the modules it needs
    when it runs: Ray, the actors and the models are heavy, and `--help` / `--dry-run` / `--print-config`
    never need them."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.tracker = Tracker(cfg, self.run_dir, commit=git_commit(REPO_ROOT))
        self.stop = StopSignals()
        self.stop.install()
        # Set by the steps below; teardown (`close`) shuts down whatever was started.
        self.eval_prompts: list[Sample] = []
        self.loader: PromptLoader | None = None
        self.render_pool: RenderPool | None = None
        self.reward_pool: RewardPool | None = None
        self.trainer: TrainerGroup | None = None
        self.rollout_pool: RolloutPool | None = None
        self.stream: StreamingScheduler | None = None
        self._revisers: Iterator[int] | None = None  # which rollout worker revises next
        self.chaos: ChaosMonkey | None = None
        self.step = 0  # the next step to train
        self.last_saved = 0  # the policy version of the latest checkpoint
        self.evaluated_version: int | None = None  # the version the held-out split was last evaluated at
        # The loader runs ahead of the trainer (streaming), so a checkpoint after update k must record where
        # the loader stood before drawing step k's successor, not where it stands now: {step: loader state}.
        self.loader_state_before_step: dict[int, dict] = {}
        self.samples_drawn = 0  # every sample the loader's prompts make, for the fault accounting
        self.faults = {"trainer_restarts": 0, "discarded_samples": 0, "discarded_updates": 0}
        self.failure: Exception | None = None  # a stage failed beyond its retries, or a step timed out

    # ------------------------------------------------------------------------------------------ the steps
    def connect(self) -> None:
        """Ray: the cluster named by config or $RAY_ADDRESS, one running on this machine, or a new local one."""
        from actors.cluster import connect  # Ray: only a run needs it

        log.info("ray: %s", connect(self.cfg.ray))
        self.stop.install()  # ray.init replaced our SIGTERM handler with its own (sys.exit)

    def check_placement(self) -> None:
        """Refuse configurations the cluster cannot host (ResourceError), before creating anything: the same
        first-fit as `--dry-run`, honouring node_group."""
        from actors.cluster import check_fits  # Ray: only a run needs it
        from pipeline.placement import requests_from_config

        check_fits(requests_from_config(self.cfg))

    def prepare_data(self) -> None:
        """Local parquet files, or a synthetic set rendered once and cached."""
        # numpy and PIL: only a run needs them
        from pipeline.data.datasets import prepare_datasets
        from pipeline.data.loader import PromptLoader

        train_prompts, self.eval_prompts = prepare_datasets(self.cfg.data)
        if self.cfg.reward.backend == "structural" and self.cfg.reward.uses_judge():
            from pipeline.critic.backends.structural import check_reference_programs  # the oracle's data rule

            check_reference_programs(train_prompts, "training")
        self.loader = PromptLoader(train_prompts, self.cfg.data.prompts_per_step, seed=self.cfg.run.seed)
        log.info("data: %d train prompts, %d eval prompts", len(train_prompts), len(self.eval_prompts))

    def prepare_models(self) -> None:
        """Checkpoint paths checked, tiny models built (the tiny critic trained: minutes) here, once, before
        actors that must come up within a start timeout look for them."""
        # torch and transformers: only a run needs them
        from pipeline.critic.scorer import LOCAL_MODEL_BACKENDS
        from pipeline.tiny import ensure_models

        cfg = self.cfg
        cfg.models = ensure_models(cfg.models, reward=cfg.reward.backend in LOCAL_MODEL_BACKENDS)

    def start_actors(self) -> None:
        """Renderers, reward models, the trainer group, then rollout workers."""
        # Ray actors: only a run needs them
        from actors.render_pool import RenderPool
        from actors.reward import RewardPool
        from actors.rollout import RolloutPool
        from pipeline.placement import NODE_GROUP_LABEL

        cfg, start_timeout = self.cfg, self.cfg.ray.actor_start_timeout_s
        self.render_pool = RenderPool(cfg.render, num_actors=cfg.render.actors,
                                      cpus_per_actor=cfg.render.cpus_per_actor, start_timeout_s=start_timeout)
        self.reward_pool = RewardPool(cfg.reward, cfg.models, start_timeout_s=start_timeout)
        self.trainer = self._new_trainer()
        self.rollout_pool = RolloutPool(
            cfg.models, cfg.rollout, seed=cfg.run.seed, start_timeout_s=start_timeout,
            options={"num_cpus": cfg.rollout.num_cpus, "num_gpus": cfg.rollout.num_gpus,
                     "label_selector": {NODE_GROUP_LABEL: cfg.rollout.node_group} if cfg.rollout.node_group else {}})
        log.info("actors up: %d rollout, %d render, %d reward, %d trainer rank(s)", len(self.rollout_pool),
                 cfg.render.actors, cfg.reward.actors.replicas, cfg.trainer.ranks)
        if cfg.rollout.weight_sync == "nccl":  # while the engines are idle: no member joins late
            self.trainer.init_weight_group(self.rollout_pool.workers)

    def resume(self) -> None:
        """Weights, optimizer, scheduler and RNG from the trainer's checkpoint; the data order from the loader
        position saved with it, so the next batch is the one the interrupted run would draw."""
        meta = self.trainer.resume(self.run_dir) if self.cfg.trainer.resume else None
        if meta is not None:
            self.step = meta["step"]
            self.loader.load_state_dict(meta["extra"]["loader"])
            self.rollout_pool.sync_weights(self.trainer)
            log.info("resumed from step %d (%s)", self.step, self.run_dir)
        self.loader_state_before_step = {self.step: self.loader.state_dict()}
        self.last_saved = self.trainer.version

    def evaluate_baseline(self) -> None:
        """The held-out split before any update (run.eval_at_start; not on a resumed run)."""
        if self.cfg.run.eval_at_start and self.eval_prompts and self.step == 0:
            self.evaluate(0)

    def start_stream(self) -> None:
        """Rollout → render → reward (→ revise) run in threads, at most max_staleness versions ahead of the
        trainer; then the chaos monkey (fault injection; off unless chaos.kinds is set)."""
        from actors.chaos import ChaosMonkey  # Ray: only a run needs it

        self._revisers = itertools.cycle(range(len(self.rollout_pool)))
        self.stream = self._new_stream(self.step)
        self.chaos = ChaosMonkey(self.cfg.chaos, {  # handles looked up at each kill: pools replace actors
            "rollout": lambda: self.rollout_pool.workers, "render": lambda: self.render_pool.actors,
            "reward": lambda: list(self.reward_pool.replicas.values()), "trainer": lambda: self.trainer.ranks,
        }).start()

    def train(self) -> None:
        """One GRPO update per step on the step's complete, scored groups, until run.total_steps, a stop
        signal, or a stage failing beyond its retries (`self.failure`). From here a first SIGINT / SIGTERM lets
        the current update and weight sync finish, then stops (and `save_final_checkpoint` saves)."""
        # Ray actors and the stream's threads: only a run needs them
        from actors.rollout import RolloutError
        from actors.trainer import TrainerError
        from pipeline.loop.streaming import StreamError, StreamInterrupted
        from pipeline.rollout.weight_sync import WeightSyncError

        cfg = self.cfg
        self.stop.begin_graceful(on_request=lambda: self.stream.interrupt())  # the stream of the moment
        try:
            while self.step < cfg.run.total_steps and not self.stop.requested:
                t0 = time.perf_counter()
                try:
                    groups = self.stream.next_batch(self.step, timeout_s=cfg.stream.step_timeout_s)
                except StreamInterrupted:
                    break
                wait_s = time.perf_counter() - t0
                try:
                    metrics, sync = self._update(groups)
                except TrainerError as e:  # a rank died or hung: the group restarts from the latest checkpoint
                    self.step = self._restart_trainer(e, dropped=sum(len(g) for g in groups))
                    continue
                self.stream.mark_trained(self.trainer.version)
                metrics.update(_throughput(self.stream, time.perf_counter() - t0, wait_s, sync))
                metrics.update(self._fault_counts())  # run totals so far
                self.tracker.log_step(metrics, groups, step=self.step)  # + progress line, histograms, samples
                _record_data_order(self.run_dir, self.step, self.trainer.version, groups)
                self.step += 1
                if cfg.trainer.save_every_steps and self.trainer.version % cfg.trainer.save_every_steps == 0:
                    try:
                        self._save()
                    except TrainerError as e:  # died mid-save: the torn checkpoint is never `latest`
                        self.step = self._restart_trainer(e)
                        continue
                if cfg.run.eval_every_steps and self.trainer.version % cfg.run.eval_every_steps == 0:
                    self.evaluate(self.step - 1)
        # A stage failed beyond its retries, a step timed out, or the engines could not take new weights: the
        # trainer is healthy, its updates are saved (save_final_checkpoint) and the run exits 1.
        except (StreamError, RolloutError, WeightSyncError) as e:
            self.failure = e
            log.error("run stopped at step %d: %s", self.step, e)
        finally:
            if self.stop.requested:
                log.warning("%s: stopped before step %d, the policy is at version %d", self.stop.name, self.step,
                            self.trainer.version)
        self.chaos.stop()  # no kills during the final checkpoint and evaluation

    def save_final_checkpoint(self) -> None:
        """Unless this version was just saved; after a stage failure too: the trainer is healthy and its
        updates are kept."""
        if self.trainer.version != self.last_saved:
            self._save()

    def evaluate_final(self) -> None:
        """The held-out split at the final policy; skipped when stopping on a signal (the user wants the run to
        end), after a failure, or when this version was just evaluated."""
        if (self.eval_prompts and not self.stop.requested and self.failure is None
                and self.evaluated_version != self.trainer.version):
            self.evaluate(max(self.step - 1, 0))

    def report(self) -> int:
        """<run_dir>/faults.json and a log line: the faults the run survived. Returns the exit code."""
        survived = {**self._fault_counts(), "chaos/kills": self.chaos.counts(),
                    "samples/drawn": self.samples_drawn, "samples/unconsumed_at_end": self.stream.samples_in_flight}
        RunLayout(self.run_dir).faults.write_text(json.dumps(survived, indent=2, sort_keys=True))
        log.info("faults survived: %s", " ".join(f"{k}={v}" for k, v in survived.items()))
        return 1 if self.failure is not None else self.stop.exit_code

    def close(self, exit_code: int) -> None:
        """Teardown always runs to the end (more signals only hurry it): no actor or Ray process outlives us."""
        import ray  # only a run needs it (keeps --help, --dry-run and --print-config fast)

        self.stop.begin_teardown()
        if self.stream is not None:
            stuck = self.stream.close(timeout_s=2.0 if self.stop.aborted else 10.0)
            if stuck:
                log.warning("stream threads still in a call at shutdown: %s", stuck)
        if self.trainer is not None:
            self.trainer.shutdown(graceful=not self.stop.aborted)
        if self.rollout_pool is not None:
            self.rollout_pool.shutdown()
        for resource in (self.render_pool, self.reward_pool):
            if resource is not None:
                (resource.shutdown if hasattr(resource, "shutdown") else resource.close)()  # render: close()
        self.tracker.finish(exit_code)
        ray.shutdown()
        self.stop.uninstall()

    # ------------------------------------------------------------------------------- what the steps share
    def evaluate(self, step: int) -> None:
        """The held-out split, one greedy answer per prompt, revised run.eval_revision_rounds times."""
        # numpy and PIL: only a run needs them
        from pipeline.data.loader import PromptLoader
        from pipeline.loop.stages import evaluate_policy

        self.evaluated_version = self.trainer.version
        prompts = PromptLoader(self.eval_prompts, len(self.eval_prompts), seed=self.cfg.run.seed).next_batch()
        metrics = evaluate_policy(prompts, lambda batch: self.rollout_pool.generate(0, batch, 1, True),
                                  self.render_pool, self.reward_pool, self.cfg.run.eval_revision_rounds,
                                  self.cfg.revision)
        self.tracker.log({**metrics, "eval/updates": self.trainer.version}, step=step)

    def _new_trainer(self) -> TrainerGroup:
        from actors.trainer import TrainerGroup  # Ray and verl: only a run needs them

        cfg = self.cfg
        return TrainerGroup(cfg.trainer, str(cfg.models.policy.path), group_size=cfg.rollout.sampling.n,
                            run_config=config_to_dict(cfg), weight_sync=cfg.rollout.weight_sync,
                            weight_dtype=cfg.models.policy.dtype)

    def _new_stream(self, first_step: int) -> StreamingScheduler:
        # numpy and PIL: only a run needs them
        from pipeline.loop.stages import render_stage, reward_stage
        from pipeline.loop.streaming import StreamingScheduler

        cfg, s = self.cfg, self.cfg.stream
        rollout_fns = [lambda prompts, i=i: self.rollout_pool.generate(i, prompts)
                       for i in range(len(self.rollout_pool))]
        stages = [("render", lambda batch: render_stage(batch, self.render_pool), s.render_threads),
                  ("reward", lambda batch: reward_stage(batch, self.reward_pool), s.reward_threads)]
        if cfg.rollout.revision_rounds:
            stages.append(("revise", self._revise_answers, s.reward_threads))
        scheduler = StreamingScheduler(next_prompts=self._draw_prompts, rollout_fns=rollout_fns, stages=stages,
                                       group_size=cfg.rollout.sampling.n, max_staleness=s.max_staleness,
                                       chunk_size=s.chunk_size, queue_size=s.queue_size)
        scheduler.start(first_step=first_step, trained_versions=self.trainer.version)
        return scheduler

    def _draw_prompts(self) -> list[Sample]:  # the stream's prompt thread
        batch = self.loader.next_batch()
        self.samples_drawn += len(batch) * self.cfg.rollout.sampling.n
        self.loader_state_before_step[max(self.loader_state_before_step) + 1] = self.loader.state_dict()
        return batch

    def _revise_answers(self, batch: list[Sample]) -> list[Sample]:
        """Training episodes: each answer revised rollout.revision_rounds times (a stream stage)."""
        from pipeline.loop.stages import revision_stage  # numpy and PIL: only a run needs them

        def sample_one(prompts):
            return self.rollout_pool.generate(next(self._revisers), prompts, 1)

        return revision_stage(batch, sample_one, self.render_pool, self.reward_pool,
                              self.cfg.rollout.revision_rounds, self.cfg.revision.max_listed,
                              self.cfg.revision.feedback)

    def _update(self, groups: list[list[Sample]]) -> tuple[dict, dict]:
        """The step's rewards finalised, one GRPO update on its groups (and their revised turns), the new
        weights synced to the rollout workers. Returns the step's metrics so far and the sync's timings;
        raises TrainerError when a rank died or hung."""
        # numpy and PIL: only a run needs them
        from pipeline.loop.stages import finalize_groups
        from pipeline.loop.step_metrics import sample_metrics
        from pipeline.revision import revision_groups

        if self.cfg.rollout.vllm.enable_sleep_mode:  # colocated engines free the GPUs for the update;
            self.rollout_pool.call_all("sleep")  # the weight sync wakes them
        revised = revision_groups(groups)  # the revised turns' groups ([] without revision rounds)
        batch_stats = finalize_groups(self.reward_pool.function, groups)
        revised_stats = finalize_groups(self.reward_pool.function, revised) if revised else {}
        metrics = {f"train/{k}": v for k, v in self.trainer.update(groups + revised).items()
                   if isinstance(v, (int, float))}
        sync = self.rollout_pool.sync_weights(self.trainer)
        generated_by = self.trainer.version - 1
        metrics.update({f"samples/{k}": v for k, v in sample_metrics(groups, generated_by).items()})
        metrics.update({f"reward_batch/{k}": v for k, v in batch_stats.items() if isinstance(v, (int, float))})
        if revised:  # metrics split by turn: first answers above, revised ones here
            metrics.update({f"samples_revised/{k}": v for k, v in sample_metrics(revised, generated_by).items()})
            metrics.update({f"reward_batch_revised/{k}": v for k, v in revised_stats.items()
                            if isinstance(v, (int, float))})
        return metrics, sync

    def _save(self) -> None:
        path = self.trainer.save_checkpoint(
            self.run_dir, extra={"loader": self.loader_state_before_step[self.trainer.version]})
        self.last_saved = self.trainer.version
        log.info("checkpoint: %s", path)

    def _restart_trainer(self, error: Exception, dropped: int = 0) -> int:
        """A rank died or hung: a new group from the latest checkpoint; the stream rewinds to the loader
        position saved with it (samples drawn for the discarded versions are dropped, and counted). Returns
        the step to train next (the restored version)."""
        faults, max_restarts = self.faults, self.cfg.trainer.max_restarts
        if faults["trainer_restarts"] >= max_restarts:
            raise error
        faults["trainer_restarts"] += 1
        stuck = self.stream.close(timeout_s=10.0)
        if "prompts" in stuck:  # it could still draw from the loader we are about to rewind
            raise RuntimeError("the stream's prompt thread did not stop; cannot rewind the loader") from error
        faults["discarded_samples"] += self.stream.samples_in_flight + dropped  # + the failed step's own batch
        self.trainer.shutdown(graceful=False)  # ranks still alive sit in a collective with the dead one
        self.trainer = self._new_trainer()
        meta = self.trainer.resume(self.run_dir)  # None: no checkpoint yet, the initial weights (version 0)
        version = self.trainer.version
        faults["discarded_updates"] += self.step - version
        self.loader.load_state_dict(meta["extra"]["loader"] if meta else self.loader_state_before_step[version])
        self.loader_state_before_step = {version: self.loader.state_dict()}
        self.last_saved = version
        self.rollout_pool.sync_weights(self.trainer)
        log.warning("trainer failed at step %d (%s): restarted from version %d (restart %d of at most %d; "
                    "%d update(s) and %d in-flight sample(s) discarded so far)", self.step, error, version,
                    faults["trainer_restarts"], max_restarts, faults["discarded_updates"],
                    faults["discarded_samples"])
        self.stream = self._new_stream(version)
        return version

    def _fault_counts(self) -> dict[str, int]:
        """Faults survived so far (run totals): actors replaced, requests resent, trainer restarts, discarded
        work."""
        return {**{f"infra/{k}": v for k, v in self.faults.items()},
                "infra/rollout_replacements": self.rollout_pool.replacements,
                "infra/rollout_reissued": self.rollout_pool.reissued,
                "infra/render_replacements": self.render_pool.replacements,
                "infra/render_resent": self.render_pool.resent,
                "infra/reward_replacements": self.reward_pool.replacements,
                "infra/reward_dead_engines": self.reward_pool.dead_engines,
                "infra/reward_retried_chunks": self.reward_pool.retried_chunks}


def _record_data_order(run_dir: Path, step: int, version: int, groups: list) -> None:
    """<run_dir>/data_order.jsonl: which prompts each update trained on (a rewound or resumed step appears
    again; its last line is the one the final policy saw). Resume and fault tests compare it with the loader."""
    with RunLayout(run_dir).data_order.open("a") as f:
        f.write(json.dumps({"step": step, "version": version,
                            "prompts": sorted(g[0].prompt_id for g in groups)}) + "\n")


def _throughput(stream: StreamingScheduler, step_s: float, wait_s: float, sync: dict) -> dict[str, float]:
    """Per-stage busy time since the start and queue depths: where the pipeline spends its time."""
    out = {"perf/step_s": step_s, "perf/wait_for_batch_s": wait_s,
           "perf/weight_sync_s": sync["weight_sync_s"]}
    for name, stats in stream.stats.stages.items():
        out[f"perf/{name}_busy_s"] = stats.busy_s
        out[f"perf/{name}_items"] = stats.items
    for name, depth in stream.queue_depths().items():
        out[f"queue/{name}"] = depth
    return out


if __name__ == "__main__":
    sys.exit(main())
