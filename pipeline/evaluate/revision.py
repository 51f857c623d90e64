"""Test-time reflection & revision on a held-out set: `python -m pipeline.evaluate revise`.

The policy answers each held-out prompt (greedy), the critic judges, and the policy revises with that feedback
for up to K rounds (`pipeline/revision.py`); the answers kept after each round are scored with the driver's
held-out evaluation (`pipeline.loop.stages.evaluate_policy`, scored by pipeline/metrics/policy.py, the same
names as `python -m pipeline.evaluate policy`): render rate, critic reward, SSIM / MSE, TEDS (tables),
ChartMimic-style chart F1s — per task and round, with the tokens and seconds each round spent. Output: a
markdown table, `revision.json` and a plot of metric vs round (the paper's test-time scaling figure).

Everything runs in this process from one run config (the driver's YAML + overrides): the policy and critic
it names, the in-process sandboxed renderer. Tasks are evaluated one after another, so seconds are per task.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.critic.scorer import LOCAL_MODEL_BACKENDS, RewardScorer
from pipeline.data.datasets import prepare_datasets
from pipeline.data.loader import PromptLoader, load_prompts
from pipeline.loop.stages import evaluate_policy
from pipeline.render import InProcessRenderPool, configure
from pipeline.rollout import make_rollout
from pipeline.tiny import ensure_models

log = logging.getLogger(__name__)

# (metric key under eval/revision/round<k>/<task>/, column title); per-round costs follow
TABLE_METRICS = (("render_ok", "render"), ("reward", "reward"), ("ssim", "SSIM"), ("mse", "MSE"),
                 ("teds", "TEDS"), ("teds_s", "TEDS-S"), ("low_level", "chart F1"), ("structure", "SVG struct"))
PLOT_METRICS = (("reward", "critic reward"), ("render_ok", "render rate"), ("ssim", "SSIM"))


def load_eval_prompts(cfg: Config, data: list[Path] | None):
    """The prompts to revise on: the given parquet files/dirs, else the run config's held-out split."""
    if data:
        prompts, rejected = load_prompts(data)
        if rejected:
            log.warning("%d rows rejected (first: %s)", len(rejected), rejected[0])
        return prompts
    return prepare_datasets(cfg.data)[1]


def evaluate_revision(cfg: Config, rounds: int, data: list[Path] | None = None, rollout=None, scorer=None,
                      render_pool=None) -> dict[str, Any]:
    """{"rounds", "keep", "tasks": {task: {round: {metric: value}}}, "metrics": flat eval/... per task}.

    `rollout` (a `pipeline.rollout` backend), `scorer` (anything with `.measure` and `.function`, e.g. a
    `RewardScorer`) and `render_pool` (`.map`) default to the ones the config names, built here."""
    prompts = load_eval_prompts(cfg, data)
    if not prompts:
        raise ValueError("no prompts to evaluate (empty held-out split: data.synth_eval_per_task, or --data)")
    if render_pool is None:
        configure(cfg.render)
        render_pool = InProcessRenderPool()
    if scorer is None:
        models = ensure_models(cfg.models, policy=False, reward=cfg.reward.backend in LOCAL_MODEL_BACKENDS)
        scorer = RewardScorer(cfg.reward, models)
    if rollout is None:
        device = "cpu" if cfg.rollout.num_gpus <= 0 else "cuda"
        rollout = make_rollout(ensure_models(cfg.models, reward=False), cfg.rollout, device=device, seed=cfg.run.seed)

    def generate(batch):
        return rollout.generate(batch, 1, True)

    by_task: dict[str, list] = {}
    for p in prompts:
        by_task.setdefault(p.task, []).append(p)
    tasks: dict[str, dict[int, dict[str, float]]] = {}
    flat: dict[str, float] = {}
    for task, task_prompts in sorted(by_task.items()):
        t0 = time.perf_counter()
        samples = PromptLoader(task_prompts, len(task_prompts), seed=cfg.run.seed).next_batch()
        metrics = evaluate_policy(samples, generate, render_pool, scorer, rounds, cfg.revision)
        log.info("revise %s: %d prompts, %d rounds, %.0f s", task, len(task_prompts), rounds,
                 time.perf_counter() - t0)
        flat.update({f"{task}/{k}": v for k, v in metrics.items()})
        tasks[task] = per_round(metrics, task, rounds)
        tasks[task][0]["items"] = len(task_prompts)
    return {"rounds": rounds, "keep": cfg.revision.keep, "stop_when_clean": cfg.revision.stop_when_clean,
            "tasks": tasks, "metrics": flat}


def per_round(metrics: dict[str, float], task: str, rounds: int) -> dict[int, dict[str, float]]:
    """eval/revision/round<k>/<task>/<m> and round k's costs → {k: {m: value}}."""
    out: dict[int, dict[str, float]] = {}
    for k in range(rounds + 1):
        prefix = f"eval/revision/round{k}/"
        row = {m: metrics[f"{prefix}{task}/{m}"] for m, _ in TABLE_METRICS if f"{prefix}{task}/{m}" in metrics}
        for cost in ("revised", "tokens", "seconds"):
            if prefix + cost in metrics:
                row[cost] = metrics[prefix + cost]
        out[k] = row
    return out


def format_revision_table(report: dict[str, Any]) -> str:
    present = [(m, title) for m, title in TABLE_METRICS
               if any(m in row for rows in report["tasks"].values() for row in rows.values())]
    head = "| task | round | " + " | ".join(t for _, t in present) + " | revised | tokens | seconds |"
    lines = [head, "|---|---:|" + "---:|" * (len(present) + 3)]
    for task, rows in sorted(report["tasks"].items()):
        for k, row in sorted(rows.items()):
            cells = [f"{row[m]:.3f}" if m in row else "–" for m, _ in present]
            costs = ["–", "–", "–"] if k == 0 else [f"{row.get('revised', 0):.0f}", f"{row.get('tokens', 0):.0f}",
                                                     f"{row.get('seconds', 0.0):.1f}"]
            lines.append(f"| {task} | {k} | " + " | ".join(cells + costs) + " |")
    return "\n".join(lines)


def plot_revision(report: dict[str, Any], path: Path) -> Path:
    """Metric vs round, one line per task, one panel per metric."""
    import matplotlib  # heavy, and only the written report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(4 * len(PLOT_METRICS), 3.2), constrained_layout=True)
    for ax, (metric, title) in zip(axes, PLOT_METRICS):
        for task, rows in sorted(report["tasks"].items()):
            ks = [k for k in sorted(rows) if metric in rows[k]]
            ax.plot(ks, [rows[k][metric] for k in ks], marker="o", label=task)
        ax.set_title(title)
        ax.set_xlabel("revision round")
        ax.set_xticks(range(report["rounds"] + 1))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"test-time revision (keep {report['keep']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "revision.json", "table": out_dir / "revision.md", "plot": out_dir / "revision.png"}
    paths["json"].write_text(json.dumps(report, indent=2, default=float) + "\n")
    paths["table"].write_text(format_revision_table(report) + "\n")
    plot_revision(report, paths["plot"])
    return paths
