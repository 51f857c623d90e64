"""python -m pipeline.experiments ablation [--config ABLATION.yaml] [key.path=value ...]

  ablation   train the same warm-started policy with each reward arm × seed (configs/ablation/cpu.yaml: render
             success, SSIM, embedding similarity, Visual-ERM with the learned tiny critic and with the oracle
             critic), then write to out_dir:
             ablation.md (held-out metrics before → after, mean ± std over seeds), ablation.json,
             ablation.png (metric vs update per arm) and the reward-hacking table (hacking.md). Finished runs
             are skipped on a second call (resumable per arm).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.schema import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("ablation")
    a.add_argument("--config", default=None, help="ablation YAML (AblationConfig); default: built-in arms")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("overrides", nargs="*", help="AblationConfig overrides, e.g. seeds=[0] out_dir=runs/abl")
    args = parser.parse_args(argv)
    from pipeline.experiments.ablation import load_ablation_config

    try:
        cfg = load_ablation_config(args.config, args.overrides)
        report = run_ablation(cfg, progress=not args.no_progress)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report["markdown"])
    return 0


def run_ablation(cfg, progress: bool = True) -> dict:
    from pipeline.critic.scorer import LOCAL_MODEL_BACKENDS, RewardScorer
    from pipeline.data.datasets import prepare_datasets
    from pipeline.experiments import ablation, hacking
    from pipeline.render import configure, render
    from pipeline.runlog.tracking import setup_console_logging
    from pipeline.tiny import ensure_models

    started = time.perf_counter()
    first = ablation.arm_config(cfg, cfg.arms[0], cfg.seeds[0])
    from pipeline import console

    console.setup(first.logging.progress)  # the driver's console policy: 15 runs in one process stay readable
    setup_console_logging(first.logging.level)
    out = Path(cfg.out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    trained = ablation.run_arms(cfg, progress=progress)
    tasks = first.data.tasks
    summary = ablation.summarize(trained["runs"], tasks)

    # Reward hacking: every arm's reward on the same probes (held-out references, rendered once).
    configure(first.render)
    _, eval_prompts = prepare_datasets(first.data)
    probes = hacking.probe_samples(eval_prompts, cfg.probes_per_task, lambda kind, code: render(kind, code))
    scorers = {}
    for arm in cfg.arms:
        arm_cfg = ablation.arm_config(cfg, arm, cfg.seeds[0])
        models = ensure_models(arm_cfg.models, policy=False, reward=arm_cfg.reward.backend in LOCAL_MODEL_BACKENDS)
        scorers[arm.name] = RewardScorer(arm_cfg.reward, models)
    probe_table = hacking.score_probes(probes, scorers)

    seconds = trained["seconds"]
    per_arm = {arm.name: sum(v for k, v in seconds.items() if k.rsplit("-s", 1)[0] == arm.name) for arm in cfg.arms}
    markdown = "\n".join([
        f"# Reward ablation ({len(cfg.arms)} arms × {len(cfg.seeds)} seeds, {first.run.total_steps} updates each)",
        "", ablation.format_table(summary, tasks),
        "## Reward hacking: mean reward of degenerate outputs vs the true program", "",
        hacking.format_probes(probe_table), "",
        "Training time per arm (all seeds): " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in per_arm.items()),
        f"Total: {(time.perf_counter() - started) / 60:.1f} min", ""])
    (out / "ablation.md").write_text(markdown)
    (out / "hacking.md").write_text(hacking.format_probes(probe_table) + "\n")
    (out / "ablation.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"), "summary": summary,
                                                   "probes": probe_table, "seconds": seconds}, indent=2,
                                                  default=str) + "\n")
    ablation.plot_curves(summary, tasks, out / "ablation.png")
    return {"markdown": markdown, "summary": summary, "probes": probe_table, "out": str(out)}


if __name__ == "__main__":
    sys.exit(main())
