"""Reward ablation: the same warm-started policy, data and budget, trained with different rewards; held-out
metrics before and after (and every N steps), mean ± std over seeds. The paper's central comparison (text
rules / embedding similarity / Visual-ERM), at laptop scale here and at paper scale with a GPU preset.

Each arm × seed is one run of the real driver (`pipeline.main.run`) with the arm's reward overrides on top of
the shared ones, in `<out_dir>/<arm>-s<seed>/`; a finished run leaves `ablation_done.json` and is skipped
when the command is run again (resumable per arm). Arms differ only in `reward.*` (checked at start-up), so
steps, prompts, samples and token limits are the same for all.

The held-out metrics compared are the reward-independent ones: render rate, SSIM, MSE, TEDS and TEDS-S
(tables), the ChartMimic-style chart F1 mean, and the SVG structure score (`pipeline/metrics/svg.py`).
(`eval/reward` is each arm's own reward, not comparable across arms.)
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from pipeline.config import Config, load_config
from pipeline.main import run
from pipeline.runlog.layout import RunLayout
from pipeline.schema import ConfigError, Strict, load_section

log = logging.getLogger(__name__)

# (eval key under eval/<task>/, title, higher is better)
METRICS = (("render_ok", "render rate", True), ("ssim", "SSIM", True), ("mse", "MSE", False),
           ("teds", "TEDS", True), ("teds_s", "TEDS-S", True), ("low_level", "chart F1", True),
           ("structure", "SVG structure", True))
DONE = "ablation_done.json"


class ArmConfig(Strict):
    name: str
    overrides: list[str] = []  # run-config overrides that make this arm: reward.* only


def _default_arms() -> list[ArmConfig]:
    render = "{name: render_success}"
    return [
        ArmConfig(name="render", overrides=[f"reward.formula.terms=[{render}]"]),
        ArmConfig(name="ssim", overrides=[f"reward.formula.terms=[{render}, {{name: ssim}}]"]),
        # reward.embedding.path is filled in with a tiny random DINOv2 when the arm does not name one
        ArmConfig(name="embedding", overrides=[f"reward.formula.terms=[{render}, {{name: embedding}}]"]),
        # Visual-ERM (official formula) with the learned tiny critic (blind to its images: README, "The critic"),
        # and with the oracle critic: the discrepancies a perfect critic would list (the structural differ).
        ArmConfig(name="visual_erm_learned", overrides=["reward.backend=hf"]),
        ArmConfig(name="visual_erm_oracle", overrides=["reward.backend=structural"]),
    ]


class AblationConfig(Strict):
    preset: str | None = None  # the run preset every arm starts from (default: configs/default.yaml)
    overrides: list[str] = []  # shared by every arm: the budget (steps, prompts, n, tokens), data, eval cadence
    arms: list[ArmConfig] = Field(default_factory=_default_arms)
    seeds: list[int] = [0, 1, 2]
    out_dir: str = "runs/ablation"
    probes_per_task: int = Field(2, ge=0)  # held-out references the reward-hacking probes are built from


def load_ablation_config(path: str | Path | None, overrides: list[str]) -> AblationConfig:

    return load_section(AblationConfig, path, overrides)


def arm_config(cfg: AblationConfig, arm: ArmConfig, seed: int) -> Config:
    """The full run config of one arm and seed; refuses an arm override outside `reward.`."""
    for item in arm.overrides:
        if not item.startswith("reward."):
            raise ConfigError(f"arm {arm.name!r}: override {item!r} is not a reward setting; arms may differ "
                              "only in reward.* (put shared settings in `overrides`)")
    out = Path(cfg.out_dir).expanduser()
    encoder = []
    wants_encoder = any(o.startswith("reward.formula.terms=") and "embedding" in o for o in arm.overrides)
    if wants_encoder and not any(o.startswith("reward.embedding.path=") for o in [*cfg.overrides, *arm.overrides]):
        from pipeline.tiny.model import build_tiny_encoder  # heavy: pulls in tokenizers

        shared = load_config(cfg.preset, cfg.overrides)
        if shared.reward.embedding.path is None:  # no encoder named anywhere: a tiny random one, built offline
            encoder = [f"reward.embedding.path={build_tiny_encoder(shared.models.cache_dir)}"]
    return load_config(cfg.preset, [*cfg.overrides, *arm.overrides, *encoder, f"run.seed={seed}",
                                    f"run.name={arm.name}-s{seed}", f"run.output_dir={out}", "run.eval_at_start=true"])


def run_arms(cfg: AblationConfig, progress: bool = True) -> dict[str, Any]:
    """Train every arm × seed (skipping finished ones); returns {"runs": {arm: {seed: run_dir}}, "seconds"}."""
    from tqdm import tqdm

    jobs = [(arm, seed) for arm in cfg.arms for seed in cfg.seeds]
    configs = {(arm.name, seed): arm_config(cfg, arm, seed) for arm, seed in jobs}  # every config checked first
    runs: dict[str, dict[int, str]] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(jobs, desc="ablation", unit="run", disable=not progress)
    for arm, seed in bar:
        bar.set_postfix(arm=arm.name, seed=seed, refresh=False)
        run_cfg = configs[(arm.name, seed)]
        run_dir = run_cfg.run_dir
        done = run_dir / DONE
        if done.is_file():
            log.info("ablation: %s seed %d already done (%s)", arm.name, seed, run_dir)
            seconds[f"{arm.name}-s{seed}"] = json.loads(done.read_text())["seconds"]
        else:
            t0 = time.perf_counter()
            code = run(run_cfg)
            if code != 0:
                raise RuntimeError(f"ablation arm {arm.name} seed {seed} failed (exit {code}); see {run_dir}")
            elapsed = time.perf_counter() - t0
            done.write_text(json.dumps({"seconds": round(elapsed, 1), "arm": arm.name, "seed": seed}) + "\n")
            seconds[f"{arm.name}-s{seed}"] = round(elapsed, 1)
        runs.setdefault(arm.name, {})[seed] = str(run_dir)
    return {"runs": runs, "seconds": seconds}


# ------------------------------------------------------------------------------------------- analysis
def eval_curve(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """{updates done: eval metrics} from a run's metrics.jsonl (the eval records carry `eval/updates`)."""
    out: dict[int, dict[str, float]] = {}
    for line in RunLayout(Path(run_dir)).metrics.read_text().splitlines():
        record = json.loads(line)
        if "eval/updates" in record:
            out[int(record["eval/updates"])] = {k: v for k, v in record.items() if k.startswith("eval/")}
    return out


def task_metric(record: dict[str, float], task: str, metric: str) -> float | None:
    value = record.get(f"eval/{task}/{metric}")
    return None if value is None else float(value)


def summarize(runs: dict[str, dict[int, str]], tasks: list[str]) -> dict[str, Any]:
    """Per arm, task and metric: before / after mean ± std over seeds and the change; and the curves."""
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for arm, seeds in runs.items():
        per_seed = {seed: eval_curve(d) for seed, d in seeds.items()}
        for task in tasks:
            for metric, _, _ in METRICS:
                before, after = [], []
                for curve in per_seed.values():
                    if not curve:
                        continue
                    first, last = curve[min(curve)], curve[max(curve)]
                    b, a = task_metric(first, task, metric), task_metric(last, task, metric)
                    if b is not None and a is not None:
                        before.append(b)
                        after.append(a)
                    for updates, record in curve.items():
                        v = task_metric(record, task, metric)
                        if v is not None:
                            curves.setdefault(arm, {}).setdefault(f"{task}/{metric}", {}).setdefault(
                                updates, []).append(v)
                if before:
                    delta = np.array(after) - np.array(before)
                    table.setdefault(arm, {}).setdefault(task, {})[metric] = {
                        "before": float(np.mean(before)), "before_std": float(np.std(before)),
                        "after": float(np.mean(after)), "after_std": float(np.std(after)),
                        "delta": float(delta.mean()), "delta_std": float(delta.std()), "seeds": len(before)}
    return {"table": table, "curves": curves}


def moved_beyond_spread(cell: dict[str, float]) -> bool:
    """The mean change exceeds the seed spread (the larger of the before/after/change std over seeds)."""
    spread = max(cell["before_std"], cell["after_std"], cell["delta_std"])
    return abs(cell["delta"]) > spread and cell["seeds"] > 1


def format_table(summary: dict[str, Any], tasks: list[str]) -> str:
    lines = []
    for task in tasks:
        present = [(m, t) for m, t, _ in METRICS if any(m in summary["table"].get(a, {}).get(task, {})
                                                        for a in summary["table"])]
        if not present:
            continue
        lines += [f"**{task}** (held-out, mean ± std over seeds; before → after, Δ; * = Δ beyond the seed spread)",
                  "", "| arm | " + " | ".join(t for _, t in present) + " |", "|---|" + "---|" * len(present)]
        for arm, per_task in summary["table"].items():
            cells = []
            for m, _ in present:
                c = per_task.get(task, {}).get(m)
                if c is None:
                    cells.append("–")
                    continue
                star = "*" if moved_beyond_spread(c) else ""
                cells.append(f"{c['before']:.3f}±{c['before_std']:.3f} → {c['after']:.3f}±{c['after_std']:.3f} "
                             f"(Δ {c['delta']:+.3f}{star})")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], tasks: list[str], path: Path) -> Path:
    """Metric vs update, one line per arm (mean over seeds, band = ± std), one panel per task × metric."""
    import matplotlib  # heavy: matplotlib, only this path needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib, only this path needs it

    panels = [(t, m, title) for t in tasks for m, title, _ in METRICS[:3]]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, constrained_layout=True)
    for ax, (task, metric, title) in zip(axes.flat, panels):
        for arm, curves in summary["curves"].items():
            points = curves.get(f"{task}/{metric}")
            if not points:
                continue
            xs = sorted(points)
            mean = np.array([np.mean(points[x]) for x in xs])
            std = np.array([np.std(points[x]) for x in xs])
            ax.plot(xs, mean, marker="o", label=arm)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        ax.set_title(f"{task}: {title}")
        ax.set_xlabel("GRPO updates")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    with_lines = [ax for ax in axes.flat if ax.lines]
    if with_lines:
        with_lines[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
