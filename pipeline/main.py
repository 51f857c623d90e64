"""The driver: `python pipeline/main.py [--config PRESET] [key.path=value ...]`.

Same command on a laptop (local Ray, tiny models, CPU) and on a cluster (`ray job submit -- python
pipeline/main.py ...`, which sets RAY_ADDRESS). This is the one place that wires actors together; read it top
to bottom:

    prompts ─► rollout workers ─► render pool ─► reward pool ─► complete GRPO groups ─► trainer ─► weights
       ▲                                                                                              │
       └────────────────────────────── weight sync (new policy version) ◄────────────────────────────┘
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, Python puts pipeline/ itself first on sys.path, where our subpackages (data, evaluate,
    # models, ...) would shadow top-level modules of the same name. Put the repository root there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runlog.layout import RunLayout
from pipeline.config import REPO_ROOT, Config, config_to_dict, load_config
from pipeline.schema import ConfigError
from pipeline.shutdown import StopSignals  # noqa: E402
from pipeline.runlog.tracking import Tracker, git_commit, log, setup_console_logging  # noqa: E402


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
        from pipeline.config import dump_resolved

        print(dump_resolved(cfg, args.config or "configs/default.yaml"), end="")
        return 0
    if args.dry_run:
        from pipeline.placement import dry_run

        code, report = dry_run(cfg, args.config, args.cluster, REPO_ROOT)
        print(report, file=sys.stdout if code == 0 else sys.stderr)
        return code
    from pipeline import console

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
    import ray

    from actors.chaos import ChaosMonkey
    from actors.cluster import ResourceError, check_fits, connect
    from actors.render_pool import RenderPool
    from actors.reward import RewardPool
    from actors.rollout import RolloutError, RolloutPool
    from actors.trainer import TrainerError, TrainerGroup
    from pipeline.data.datasets import prepare_datasets
    from pipeline.data.loader import PromptLoader
    from pipeline.critic.scorer import LOCAL_MODEL_BACKENDS
    from pipeline.tiny import ensure_models
    from pipeline.placement import NODE_GROUP_LABEL, requests_from_config
    from pipeline.revision import revision_groups
    from pipeline.loop.stages import evaluate_policy, finalize_groups, render_stage, revision_stage, reward_stage
    from pipeline.loop.step_metrics import sample_metrics
    from pipeline.loop.streaming import StreamError, StreamingScheduler, StreamInterrupted

    run_dir = cfg.run_dir
    tracker = Tracker(cfg, run_dir, commit=git_commit(REPO_ROOT))
    exit_code, trainer, stream, render_pool, reward_pool, rollout_pool = 1, None, None, None, None, None
    stop = StopSignals()
    stop.install()
    try:
        log.info("ray: %s", connect(cfg.ray))
        stop.install()  # ray.init replaced our SIGTERM handler with its own (sys.exit)

        # 1. Placement: refuse configurations the cluster cannot host, before creating anything.
        t = cfg.trainer
        check_fits(requests_from_config(cfg))  # same first-fit as `--dry-run`, honouring node_group

        # 2. Data: local parquet files, or a synthetic set rendered once and cached.
        train_prompts, eval_prompts = prepare_datasets(cfg.data)
        loader = PromptLoader(train_prompts, cfg.data.prompts_per_step, seed=cfg.run.seed)
        log.info("data: %d train prompts, %d eval prompts", len(train_prompts), len(eval_prompts))

        # 3. Models: checkpoint paths checked, tiny models built (the tiny critic trained: minutes) here, once,
        #    before actors that must come up within a start timeout look for them.
        cfg.models = ensure_models(cfg.models, reward=cfg.reward.backend in LOCAL_MODEL_BACKENDS)
        policy_path = cfg.models.policy.path

        # 4. Actors: renderers, reward models, the trainer group, then rollout workers.
        start_timeout = cfg.ray.actor_start_timeout_s
        render_pool = RenderPool(cfg.render, num_actors=cfg.render.actors, cpus_per_actor=cfg.render.cpus_per_actor,
                                 start_timeout_s=start_timeout)
        reward_pool = RewardPool(cfg.reward, cfg.models, start_timeout_s=start_timeout)

        def start_trainer() -> TrainerGroup:
            return TrainerGroup(cfg.trainer, str(policy_path), group_size=cfg.rollout.sampling.n,
                                run_config=config_to_dict(cfg), weight_sync=cfg.rollout.weight_sync,
                                weight_dtype=cfg.models.policy.dtype)

        trainer = start_trainer()
        rollout_pool = RolloutPool(
            cfg.models, cfg.rollout, seed=cfg.run.seed, start_timeout_s=start_timeout,
            options={"num_cpus": cfg.rollout.num_cpus, "num_gpus": cfg.rollout.num_gpus,
                     "label_selector": {NODE_GROUP_LABEL: cfg.rollout.node_group} if cfg.rollout.node_group else {}})
        log.info("actors up: %d rollout, %d render, %d reward, %d trainer rank(s)", len(rollout_pool),
                 cfg.render.actors, cfg.reward.actors.replicas, t.ranks)

        # 5. Resume: weights, optimizer, scheduler and RNG from the trainer's checkpoint; the data order from
        #    the loader position saved with it, so the next batch is the one the interrupted run would draw.
        start_step = 0
        meta = trainer.resume(run_dir) if t.resume else None
        if meta is not None:
            start_step = meta["step"]
            loader.load_state_dict(meta["extra"]["loader"])
            rollout_pool.sync_weights(trainer)
            log.info("resumed from step %d (%s)", start_step, meta.get("path", run_dir))

        # The loader runs ahead of the trainer (streaming), so a checkpoint after update k must record where
        # the loader stood before drawing step k's successor, not where it stands now.
        loader_state_before_step = {start_step: loader.state_dict()}

        drawn = {"samples": 0}  # every sample the loader's prompts make, for the fault accounting

        def draw_prompts():
            batch = loader.next_batch()
            drawn["samples"] += len(batch) * cfg.rollout.sampling.n
            loader_state_before_step[max(loader_state_before_step) + 1] = loader.state_dict()
            return batch

        last_saved = trainer.version

        def save() -> None:
            nonlocal last_saved
            path = trainer.save_checkpoint(run_dir, extra={"loader": loader_state_before_step[trainer.version]})
            last_saved = trainer.version
            log.info("checkpoint: %s", path)

        def greedy(prompts):  # evaluation: one deterministic answer per held-out prompt
            return rollout_pool.generate(0, prompts, 1, True)

        evaluated_version = None  # the policy version the held-out split was last evaluated at

        def evaluate(step: int) -> None:  # the held-out split, revised run.eval_revision_rounds times
            nonlocal evaluated_version
            evaluated_version = trainer.version
            prompts = PromptLoader(eval_prompts, len(eval_prompts), seed=cfg.run.seed).next_batch()
            metrics = evaluate_policy(prompts, greedy, render_pool, reward_pool, cfg.run.eval_revision_rounds,
                                      cfg.revision)
            tracker.log({**metrics, "eval/updates": trainer.version}, step=step)

        revisers = itertools.cycle(range(len(rollout_pool)))

        def revise_answers(batch):  # training episodes: each answer revised rollout.revision_rounds times
            def sample_one(prompts):
                return rollout_pool.generate(next(revisers), prompts, 1)
            return revision_stage(batch, sample_one, render_pool, reward_pool, cfg.rollout.revision_rounds,
                                  cfg.revision.max_listed)

        if cfg.run.eval_at_start and eval_prompts and start_step == 0:  # the baseline, before any update
            evaluate(0)

        # 6. The stream: rollout → render → reward run in threads, at most max_staleness versions ahead.
        s = cfg.stream

        def start_stream(first_step: int) -> StreamingScheduler:
            scheduler = StreamingScheduler(
                next_prompts=draw_prompts,
                rollout_fns=[lambda prompts, i=i: rollout_pool.generate(i, prompts) for i in range(len(rollout_pool))],
                stages=[("render", lambda batch: render_stage(batch, render_pool), s.render_threads),
                        ("reward", lambda batch: reward_stage(batch, reward_pool), s.reward_threads),
                        *([("revise", revise_answers, s.reward_threads)] if cfg.rollout.revision_rounds else [])],
                group_size=cfg.rollout.sampling.n,
                max_staleness=s.max_staleness,
                chunk_size=s.chunk_size,
                queue_size=s.queue_size,
            )
            scheduler.start(first_step=first_step, trained_versions=trainer.version)
            return scheduler

        stream = start_stream(start_step)
        faults = {"trainer_restarts": 0, "discarded_samples": 0, "discarded_updates": 0}
        chaos = ChaosMonkey(cfg.chaos, {  # fault injection; off unless chaos.kinds is set
            "rollout": lambda: rollout_pool.workers, "render": lambda: render_pool.actors,
            "reward": lambda: list(reward_pool.replicas.values()), "trainer": lambda: trainer.ranks}).start()

        def restart_trainer(error: Exception, step: int, dropped: int = 0) -> int:
            """A rank died or hung: a new group from the latest checkpoint; the stream rewinds to the loader
            position saved with it (samples drawn for the discarded versions are dropped, and counted)."""
            nonlocal trainer, stream, last_saved, loader_state_before_step
            if faults["trainer_restarts"] >= t.max_restarts:
                raise error
            faults["trainer_restarts"] += 1
            stuck = stream.close(timeout_s=10.0)
            if "prompts" in stuck:  # it could still draw from the loader we are about to rewind
                raise RuntimeError("the stream's prompt thread did not stop; cannot rewind the loader") from error
            faults["discarded_samples"] += stream.samples_in_flight + dropped  # + the failed step's own batch
            trainer.shutdown(graceful=False)  # ranks still alive sit in a collective with the dead one
            trainer = start_trainer()
            meta = trainer.resume(run_dir)  # None: no checkpoint yet, the initial weights (version 0)
            version = trainer.version
            faults["discarded_updates"] += step - version
            loader.load_state_dict(meta["extra"]["loader"] if meta else loader_state_before_step[version])
            loader_state_before_step = {version: loader.state_dict()}
            last_saved = version
            rollout_pool.sync_weights(trainer)
            log.warning("trainer failed at step %d (%s): restarted from version %d (restart %d of at most %d; "
                        "%d update(s) and %d in-flight sample(s) discarded so far)", step, error, version,
                        faults["trainer_restarts"], t.max_restarts, faults["discarded_updates"],
                        faults["discarded_samples"])
            stream = start_stream(version)
            return version

        # 7. Training: one GRPO update per step on the step's complete, scored groups. From here a first
        #    SIGINT / SIGTERM lets the current update and weight sync finish, then stops and saves.
        stop.begin_graceful(on_request=lambda: stream.interrupt())
        step, failure = start_step, None
        try:
            while step < cfg.run.total_steps:
                if stop.requested:
                    break
                t0 = time.perf_counter()
                try:
                    groups = stream.next_batch(step, timeout_s=s.step_timeout_s)
                except StreamInterrupted:
                    break
                wait_s = time.perf_counter() - t0
                try:
                    if cfg.rollout.vllm.enable_sleep_mode:  # colocated engines free the GPUs for the update;
                        rollout_pool.call_all("sleep")  # the weight sync wakes them
                    revised = revision_groups(groups)  # the revised turns' groups ([] without revision rounds)
                    batch_stats = finalize_groups(reward_pool.function, groups)
                    revised_stats = finalize_groups(reward_pool.function, revised) if revised else {}
                    metrics = {f"train/{k}": v for k, v in trainer.update(groups + revised).items()
                               if isinstance(v, (int, float))}
                    sync = rollout_pool.sync_weights(trainer)
                except TrainerError as e:  # a rank died or hung: the group restarts from the latest checkpoint
                    step = restart_trainer(e, step, dropped=sum(len(g) for g in groups))
                    continue
                stream.mark_trained(trainer.version)
                metrics.update({f"samples/{k}": v for k, v in sample_metrics(groups, trainer.version - 1).items()})
                metrics.update({f"reward_batch/{k}": v for k, v in batch_stats.items() if isinstance(v, (int, float))})
                if revised:  # metrics split by turn: first answers above, revised ones here
                    metrics.update({f"samples_revised/{k}": v
                                    for k, v in sample_metrics(revised, trainer.version - 1).items()})
                    metrics.update({f"reward_batch_revised/{k}": v for k, v in revised_stats.items()
                                    if isinstance(v, (int, float))})
                metrics.update(_throughput(stream, time.perf_counter() - t0, wait_s, sync))
                metrics.update(_fault_counts(faults, rollout_pool, render_pool, reward_pool))  # run totals so far
                tracker.log_step(metrics, groups, step=step)  # + progress line, reward histograms, sample table
                _record_data_order(run_dir, step, trainer.version, groups)
                step += 1
                if t.save_every_steps and trainer.version % t.save_every_steps == 0:
                    try:
                        save()
                    except TrainerError as e:  # died mid-save: the torn checkpoint is never `latest`
                        step = restart_trainer(e, step)
                        continue
                if cfg.run.eval_every_steps and trainer.version % cfg.run.eval_every_steps == 0:
                    evaluate(step - 1)
        except (StreamError, RolloutError) as e:  # a stage failed beyond its retries, or a step timed out
            failure = e
            log.error("run stopped at step %d: %s", step, e)
        finally:
            if stop.requested:
                log.warning("%s: stopped before step %d, the policy is at version %d", stop.name, step,
                            trainer.version)
        chaos.stop()
        # Final checkpoint (unless this version was just saved) — after a stage failure too: the trainer is
        # healthy and its updates are kept — and a last evaluation on the held-out split (skipped when stopping
        # on a signal, the user wants the run to end, or on a failure).
        if trainer.version != last_saved:
            save()
        if eval_prompts and not stop.requested and failure is None and evaluated_version != trainer.version:
            evaluate(max(step - 1, 0))
        survived = {**_fault_counts(faults, rollout_pool, render_pool, reward_pool),
                    "chaos/kills": chaos.counts(), "samples/drawn": drawn["samples"],
                    "samples/unconsumed_at_end": stream.samples_in_flight}
        RunLayout(run_dir).faults.write_text(json.dumps(survived, indent=2, sort_keys=True))
        log.info("faults survived: %s", " ".join(f"{k}={v}" for k, v in survived.items()))
        exit_code = 1 if failure is not None else stop.exit_code
    except ResourceError as e:
        log.error("%s", e)
        exit_code = 3
    except KeyboardInterrupt:  # a signal before training started, or a second one: no checkpoint
        log.warning("%s: aborted without saving a checkpoint (earlier ones stay valid)", stop.name)
        exit_code = stop.exit_code
    finally:
        # Teardown always runs to the end (more signals only hurry it): no actor or Ray process outlives us.
        stop.begin_teardown()
        if stream is not None:
            stuck = stream.close(timeout_s=2.0 if stop.aborted else 10.0)
            if stuck:
                log.warning("stream threads still in a call at shutdown: %s", stuck)
        if trainer is not None:
            trainer.shutdown(graceful=not stop.aborted)
        if rollout_pool is not None:
            rollout_pool.shutdown()
        for resource in (render_pool, reward_pool):
            if resource is not None:
                (resource.shutdown if hasattr(resource, "shutdown") else resource.close)()
        tracker.finish(exit_code)
        ray.shutdown()
        stop.uninstall()
    return exit_code


def _record_data_order(run_dir: Path, step: int, version: int, groups: list) -> None:
    """<run_dir>/data_order.jsonl: which prompts each update trained on (a rewound or resumed step appears
    again; its last line is the one the final policy saw). Resume and fault tests compare it with the loader."""
    with RunLayout(run_dir).data_order.open("a") as f:
        f.write(json.dumps({"step": step, "version": version,
                            "prompts": sorted(g[0].prompt_id for g in groups)}) + "\n")


def _fault_counts(faults: dict, rollout_pool, render_pool, reward_pool) -> dict[str, int]:
    """Faults survived so far (run totals): actors replaced, requests resent, trainer restarts, discarded work."""
    return {**{f"infra/{k}": v for k, v in faults.items()},
            "infra/rollout_replacements": rollout_pool.replacements,
            "infra/rollout_reissued": rollout_pool.reissued,
            "infra/render_replacements": render_pool.replacements,
            "infra/render_resent": render_pool.resent,
            "infra/reward_replacements": reward_pool.replacements,
            "infra/reward_dead_engines": reward_pool.dead_engines,
            "infra/reward_retried_chunks": reward_pool.retried_chunks}


def _throughput(stream, step_s: float, wait_s: float, sync: dict) -> dict[str, float]:
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
