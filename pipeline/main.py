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
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, Python puts pipeline/ itself first on sys.path, where our subpackages (data, evaluate,
    # models, ...) would shadow top-level modules of the same name. Put the repository root there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.config import REPO_ROOT, Config, ConfigError, config_to_dict, load_config  # noqa: E402
from pipeline.shutdown import StopSignals  # noqa: E402
from pipeline.tracking import Tracker, git_commit, log, setup_console_logging  # noqa: E402


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
    parser.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from pipeline.placement import dry_run

        code, report = dry_run(cfg, args.config, args.cluster, REPO_ROOT)
        print(report, file=sys.stdout if code == 0 else sys.stderr)
        return code
    setup_console_logging(cfg.logging.level)
    try:
        return run(cfg)
    except ConfigError as e:  # raised by components that check their settings at start-up
        log.error("config error: %s", e)
        return 2


def run(cfg: Config) -> int:
    import ray

    from actors.cluster import ResourceError, check_fits, connect, wait_ready
    from actors.render_pool import RenderPool
    from actors.reward import RewardPool
    from actors.rollout import RolloutWorker
    from actors.trainer import TrainerGroup
    from pipeline.datasets import prepare_datasets
    from pipeline.dataloader import PromptLoader
    from pipeline.critic.scorer import prepare_models
    from pipeline.models import resolve_model_path
    from pipeline.placement import NODE_GROUP_LABEL, requests_from_config
    from pipeline.revision import revision_groups
    from pipeline.stages import evaluate_policy, finalize_groups, render_stage, revision_stage, reward_stage
    from pipeline.step_metrics import sample_metrics
    from pipeline.streaming import StreamingScheduler, StreamInterrupted

    run_dir = cfg.run_dir
    tracker = Tracker(cfg, run_dir, commit=git_commit(REPO_ROOT))
    exit_code, trainer, stream, render_pool, reward_pool = 1, None, None, None, None
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
        policy_path = resolve_model_path(cfg.models.policy, cfg.models.cache_dir)
        prepare_models(cfg.models, cfg.reward.backend)

        # 4. Actors: renderers, reward models, the trainer group, then rollout workers.
        start_timeout = cfg.ray.actor_start_timeout_s
        render_pool = RenderPool(cfg.render, num_actors=cfg.render.actors, cpus_per_actor=cfg.render.cpus_per_actor,
                                 start_timeout_s=start_timeout)
        reward_pool = RewardPool(cfg.reward, cfg.models, start_timeout_s=start_timeout)
        trainer = TrainerGroup(cfg.trainer, str(policy_path), group_size=cfg.rollout.sampling.n,
                               run_config=config_to_dict(cfg), weight_sync=cfg.rollout.weight_sync,
                               weight_dtype=cfg.models.policy.dtype)
        rollout_workers = [
            RolloutWorker.options(
                num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus,
                label_selector={NODE_GROUP_LABEL: cfg.rollout.node_group} if cfg.rollout.node_group else {},
            ).remote(
                cfg.models, cfg.rollout, seed=cfg.run.seed + i)
            for i in range(cfg.rollout.replicas)
        ]
        wait_ready(rollout_workers, "rollout", start_timeout)
        log.info("actors up: %d rollout, %d render, %d reward, %d trainer rank(s)", len(rollout_workers),
                 cfg.render.actors, cfg.reward.actors.replicas, t.ranks)

        # 5. Resume: weights, optimizer, scheduler and RNG from the trainer's checkpoint; the data order from
        #    the loader position saved with it, so the next batch is the one the interrupted run would draw.
        start_step = 0
        meta = trainer.resume(run_dir) if t.resume else None
        if meta is not None:
            start_step = meta["step"]
            loader.load_state_dict(meta["extra"]["loader"])
            trainer.sync_weights(rollout_workers)
            log.info("resumed from step %d (%s)", start_step, meta.get("path", run_dir))

        # The loader runs ahead of the trainer (streaming), so a checkpoint after update k must record where
        # the loader stood before drawing step k's successor, not where it stands now.
        loader_state_before_step = {start_step: loader.state_dict()}

        def draw_prompts():
            batch = loader.next_batch()
            loader_state_before_step[max(loader_state_before_step) + 1] = loader.state_dict()
            return batch

        last_saved = trainer.version

        def save() -> None:
            nonlocal last_saved
            path = trainer.save_checkpoint(run_dir, extra={"loader": loader_state_before_step[trainer.version]})
            last_saved = trainer.version
            log.info("checkpoint: %s", path)

        def greedy(prompts):  # evaluation: one deterministic answer per held-out prompt
            return ray.get(rollout_workers[0].generate.remote(prompts, 1, True), timeout=cfg.rollout.timeout_s)

        evaluated_version = None  # the policy version the held-out split was last evaluated at

        def evaluate(step: int) -> None:  # the held-out split, revised run.eval_revision_rounds times
            nonlocal evaluated_version
            evaluated_version = trainer.version
            prompts = PromptLoader(eval_prompts, len(eval_prompts), seed=cfg.run.seed).next_batch()
            metrics = evaluate_policy(prompts, greedy, render_pool, reward_pool, cfg.run.eval_revision_rounds,
                                      cfg.revision)
            tracker.log({**metrics, "eval/updates": trainer.version}, step=step)

        revisers = itertools.cycle(rollout_workers)

        def revise_answers(batch):  # training episodes: each answer revised rollout.revision_rounds times
            def sample_one(prompts):
                return ray.get(next(revisers).generate.remote(prompts, 1), timeout=cfg.rollout.timeout_s)
            return revision_stage(batch, sample_one, render_pool, reward_pool, cfg.rollout.revision_rounds,
                                  cfg.revision.max_listed)

        if cfg.run.eval_at_start and eval_prompts and start_step == 0:  # the baseline, before any update
            evaluate(0)

        # 6. The stream: rollout → render → reward run in threads, at most max_staleness versions ahead.
        s = cfg.stream
        rollout_timeout = cfg.rollout.timeout_s
        stream = StreamingScheduler(
            next_prompts=draw_prompts,
            rollout_fns=[lambda prompts, w=w: ray.get(w.generate.remote(prompts), timeout=rollout_timeout)
                         for w in rollout_workers],
            stages=[("render", lambda batch: render_stage(batch, render_pool), s.render_threads),
                    ("reward", lambda batch: reward_stage(batch, reward_pool), s.reward_threads),
                    *([("revise", revise_answers, s.reward_threads)] if cfg.rollout.revision_rounds else [])],
            group_size=cfg.rollout.sampling.n,
            max_staleness=s.max_staleness,
            chunk_size=s.chunk_size,
            queue_size=s.queue_size,
        )
        stream.start(first_step=start_step, trained_versions=trainer.version)

        # 7. Training: one GRPO update per step on the step's complete, scored groups. From here a first
        #    SIGINT / SIGTERM lets the current update and weight sync finish, then stops and saves.
        stop.begin_graceful(on_request=stream.interrupt)
        step = start_step
        try:
            for step in range(start_step, cfg.run.total_steps):
                if stop.requested:
                    break
                t0 = time.perf_counter()
                try:
                    groups = stream.next_batch(step, timeout_s=s.step_timeout_s)
                except StreamInterrupted:
                    break
                wait_s = time.perf_counter() - t0
                if cfg.rollout.vllm.enable_sleep_mode:  # colocated engines free the GPUs for the update;
                    ray.get([w.sleep.remote() for w in rollout_workers], timeout=rollout_timeout)  # sync wakes them
                revised = revision_groups(groups)  # the revised turns' groups ([] without revision rounds)
                batch_stats = finalize_groups(reward_pool.function, groups)
                revised_stats = finalize_groups(reward_pool.function, revised) if revised else {}
                metrics = {f"train/{k}": v for k, v in trainer.update(groups + revised).items()
                           if isinstance(v, (int, float))}
                sync = trainer.sync_weights(rollout_workers)
                stream.mark_trained(trainer.version)
                metrics.update({f"samples/{k}": v for k, v in sample_metrics(groups, trainer.version - 1).items()})
                metrics.update({f"reward_batch/{k}": v for k, v in batch_stats.items() if isinstance(v, (int, float))})
                if revised:  # metrics split by turn: first answers above, revised ones here
                    metrics.update({f"samples_revised/{k}": v
                                    for k, v in sample_metrics(revised, trainer.version - 1).items()})
                    metrics.update({f"reward_batch_revised/{k}": v for k, v in revised_stats.items()
                                    if isinstance(v, (int, float))})
                metrics.update(_throughput(stream, time.perf_counter() - t0, wait_s, sync))
                metrics.update({"infra/render_replacements": render_pool.replacements,  # run totals so far
                                "infra/render_resent": render_pool.resent,
                                "infra/reward_replacements": reward_pool.replacements,
                                "infra/reward_retried_chunks": reward_pool.retried_chunks})
                tracker.log_step(metrics, groups, step=step)  # + progress line, reward histograms, sample table
                if t.save_every_steps and trainer.version % t.save_every_steps == 0:
                    save()
                if cfg.run.eval_every_steps and trainer.version % cfg.run.eval_every_steps == 0:
                    evaluate(step)
            else:
                step = cfg.run.total_steps
        finally:
            if stop.requested:
                log.warning("%s: stopped before step %d, the policy is at version %d", stop.name, step,
                            trainer.version)
        # Final checkpoint (unless this version was just saved) and a last evaluation on the held-out split
        # (skipped when stopping on a signal: the user wants the run to end).
        if trainer.version != last_saved:
            save()
        if eval_prompts and not stop.requested and evaluated_version != trainer.version:  # not twice
            evaluate(max(step - 1, 0))
        exit_code = stop.exit_code
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
        for resource in (render_pool, reward_pool):
            if resource is not None:
                (resource.shutdown if hasattr(resource, "shutdown") else resource.close)()
        tracker.finish(exit_code)
        ray.shutdown()
        stop.uninstall()
    return exit_code


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
