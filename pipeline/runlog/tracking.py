"""Run logging: console lines for a person watching, wandb for the record, plain files for the report.

wandb runs offline by default (no account; files under <run_dir>/wandb, `wandb sync` uploads them later),
online when the user sets `logging.wandb.mode=online`, or not at all with `disabled`.

What a run leaves in <run_dir>, with or without wandb (read by `python -m pipeline.report RUN_DIR`):
    run.json                      run name, git commit, start time, the resolved config
    metrics.jsonl                 one {"step", "time", metric: value, ...} line per log call
    samples/step_000003.jsonl     the sample rows of the step's table (best / worst / random per task) ...
    samples/step_000003/*.png     ... with their reference and rendered images, downscaled
Each training step also logs one compact INFO line (step i/N, reward, samples/s, step time, ETA) and, on a
terminal, a live tqdm bar; the full scalar record goes to DEBUG.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.config import Config, config_to_dict
from pipeline.runlog.layout import RunLayout
from pipeline.runlog.wandb_env import has_wandb_credentials
from pipeline.sample import Sample
from pipeline.schema import ConfigError

log = logging.getLogger("pipeline")

_USER_WANDB_DATA_DIR = os.environ.get("WANDB_DATA_DIR")  # a user's choice is kept
TABLE_KEY = "samples/table"  # the wandb key of the sample table
TABLE_COLUMNS = [
    "task",
    "pick",
    "reference",
    "rendering",
    "failure",
    "code",
    "discrepancies",
    "critic",
    "reward_breakdown",
    "reward",
    "policy_version",
]


def setup_console_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def git_commit(repo: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------------------------- sample rows


def select_table_samples(
    groups: list[list[Sample]], best: int, worst: int, randomly: int, seed: int
) -> list[tuple[str, Sample]]:
    """A bounded, distinct set of (pick, sample) per task: the `best` highest rewards, the `worst` lowest,
    then `randomly` drawn from the rest. An unscored sample (reward None: should not happen) ranks last."""
    by_task: dict[str, list[Sample]] = defaultdict(list)
    for s in (s for g in groups for s in g):
        by_task[s.task].append(s)
    rng = random.Random(seed)
    rows: list[tuple[str, Sample]] = []
    for task in sorted(by_task):
        ranked = sorted(
            by_task[task], key=lambda s: -math.inf if s.reward is None else s.reward, reverse=True
        )
        top, rest = ranked[:best], ranked[best:]
        bottom = rest[max(len(rest) - worst, 0) :] if worst else []
        rest = rest[: len(rest) - len(bottom)]
        drawn = rng.sample(rest, min(randomly, len(rest)))
        rows += [("best", s) for s in top] + [("worst", s) for s in reversed(bottom)]
        rows += [("random", s) for s in drawn]
    return rows


def format_discrepancies(discrepancies: list[dict[str, Any]]) -> str:
    """One line per listed discrepancy: `[severity] category @ location: description`."""
    lines = []
    for d in discrepancies:
        if isinstance(d, dict):
            lines.append(
                f"[{d.get('severity', '?')}] {d.get('category', '?')} @ {d.get('location', '')}: "
                f"{d.get('description', '')}"
            )
        else:
            lines.append(str(d))
    return "\n".join(lines)


def _small_image(image: Optional[np.ndarray], max_side: int):
    """The image as a PIL RGB image no larger than max_side, or None when there is none or it is malformed."""
    from PIL import Image

    if image is None:
        return None
    try:
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    except (TypeError, ValueError) as e:
        log.warning("sample table: unusable image (%s), left out", e)
        return None
    pil.thumbnail((max_side, max_side))
    return pil


def _cut(text: Optional[str], max_chars: int) -> str:
    text = text or ""
    return text if len(text) <= max_chars else text[:max_chars] + f"\n... [{len(text) - max_chars} chars cut]"


def _finite(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


# ------------------------------------------------------------------------------------------------ progress


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class StepProgress:
    """Step i/N, reward, samples/s, step time and ETA: one line per step, plus a tqdm bar on a terminal.

    Step time is measured between consecutive training steps (so checkpoints and evaluations count, as they do
    for the ETA); the first step, with nothing before it, uses the driver's own perf/step_s."""

    def __init__(self, total_steps: int, mode: str):
        self.total_steps = total_steps
        self.show_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        self._redirect = None
        self._last_time: Optional[float] = None
        self._step_times: list[float] = []

    def update(self, step: int, metrics: dict[str, Any]) -> str:
        now = time.monotonic()
        step_s = now - self._last_time if self._last_time is not None else _finite(metrics.get("perf/step_s"))
        self._last_time = now
        if step_s is not None:
            self._step_times.append(step_s)
        recent = self._step_times[-10:]
        mean_step_s = sum(recent) / len(recent) if recent else None
        remaining = max(self.total_steps - (step + 1), 0)
        samples = _finite(metrics.get("samples/samples"))
        reward = _finite(metrics.get("samples/reward/mean"))
        parts = [f"step {step} [{step + 1}/{self.total_steps}]"]
        if reward is not None:
            per_task = " ".join(
                f"{k.split('/')[2]} {v:.3f}"
                for k, v in sorted(metrics.items())
                if k.startswith("samples/reward/")
                and k.endswith("/mean")
                and k.count("/") == 3
                and _finite(v) is not None
            )
            parts.append(f"reward {reward:.3f}" + (f" ({per_task})" if per_task else ""))
        ok = _finite(metrics.get("samples/render/success_rate"))
        if ok is not None:
            parts.append(f"render ok {ok:.0%}")
        if samples is not None and step_s:
            parts.append(f"{samples / step_s:.2f} samples/s")
        if step_s is not None:
            parts.append(f"{step_s:.1f} s/step")
        if mean_step_s is not None:
            parts.append(f"ETA {_duration(mean_step_s * remaining)}")
        line = " | ".join(parts)
        if self.show_bar:
            self._update_bar(step, reward, samples, step_s)
        return line

    def _update_bar(self, step: int, reward, samples, step_s) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=self.total_steps,
                initial=step,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                desc="train",
                mininterval=0,
            )
            # Log lines go through tqdm.write while the bar is up: they print above it, not through it.
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
        postfix = []
        if reward is not None:
            postfix.append(f"reward {reward:.3f}")
        if samples is not None and step_s:
            postfix.append(f"{samples / step_s:.2f} samples/s")
        self.bar.set_postfix_str(", ".join(postfix), refresh=False)
        self.bar.update(step + 1 - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


# ------------------------------------------------------------------------------------------------- tracker


class Tracker:
    """Console + wandb + local-file sink for scalars and sample tables. One per run, owned by the driver."""

    def __init__(self, cfg: Config, run_dir: Path, commit: Optional[str] = None):
        self.run = None
        self.cfg = cfg
        self.seed = cfg.run.seed
        self.total_steps = cfg.run.total_steps
        self.table_cfg = cfg.logging.wandb
        self.critic = cfg.reward.critic_label() if cfg.reward.uses_judge() else "none (the reward asks no critic)"
        self.progress = StepProgress(cfg.run.total_steps, cfg.logging.progress)
        # A plain-JSON copy of every logged scalar and of the table rows, readable without wandb (reports).
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.samples_dir = RunLayout(run_dir).samples
        self.metrics_path = RunLayout(run_dir).metrics
        self._metrics_file = self.metrics_path.open("a", encoding="utf-8")
        config = config_to_dict(cfg)
        config["git_commit"] = commit
        RunLayout(run_dir).run_info.write_text(
            json.dumps(
                {"name": cfg.run.name, "git_commit": commit, "started": time.time(), "critic": self.critic,
                 "config": config},
                default=str,
                indent=1,
            )
        )
        wb = cfg.logging.wandb
        if wb.mode == "disabled":
            return
        if wb.mode == "online" and not has_wandb_credentials():
            # wandb would otherwise stop and wait for an interactive login, which a Ray job never answers.
            raise ConfigError(
                "logging.wandb.mode=online needs credentials: set WANDB_API_KEY or run `wandb login`, "
                "or keep logging.wandb.mode=offline"
            )
        if wb.mode == "offline" and _USER_WANDB_DATA_DIR is None:
            # A table with images is stored as a run artifact whose files wandb stages under its data dir
            # (~/.local/share/wandb by default) until `wandb sync`: keep them with the run; the run dir alone
            # holds everything (a pod's home is gone when the job ends). Set per run: one process may log
            # several runs in turn; a user's own WANDB_DATA_DIR is kept.
            os.environ["WANDB_DATA_DIR"] = str(RunLayout(run_dir).wandb_data)
        import wandb  # heavy: wandb, only this path needs it

        self.run = wandb.init(
            project=wb.project,
            entity=wb.entity,
            name=cfg.run.name,
            tags=wb.tags,
            dir=str(run_dir),
            mode=wb.mode,
            config=config,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        log.info("wandb %s run %s in %s", wb.mode, self.run.id, self.run.dir)

    def log(self, metrics: dict[str, Any], step: int, summary: Optional[str] = None) -> None:
        """Record scalars. The console gets `summary` (or the reward keys) at INFO, everything at DEBUG."""
        scalars = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        if summary is None:
            short = {k: v for k, v in metrics.items() if "reward" in k and "/" not in k.split("/", 1)[-1]}
            short = short or dict(list(metrics.items())[:6])
            summary = f"step {step} " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in short.items()
            )
        log.info("%s", summary)
        log.debug("step %d %s", step, scalars)
        record = {"step": step, "time": time.time()}
        record.update({k: v for k, v in metrics.items() if _finite(v) is not None})
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_step(self, metrics: dict[str, Any], groups: list[list[Sample]], step: int) -> None:
        """One training step: scalars (+ the progress line), reward histograms, the sample table when due."""
        self.log(metrics, step, summary=self.progress.update(step, metrics))
        if self.run is not None and (histograms := self._reward_histograms(groups)):
            self.run.log(histograms, step=step)
        every = self.table_cfg.table_every_steps
        if every and ((step + 1) % every == 0 or step + 1 == self.total_steps):
            self.log_samples(groups, step)

    def _reward_histograms(self, groups: list[list[Sample]]) -> dict[str, Any]:
        import wandb  # heavy: wandb, only this path needs it

        by_task: dict[str, list[float]] = defaultdict(list)
        for s in (s for g in groups for s in g):
            if _finite(s.reward) is not None:
                by_task[s.task].append(float(s.reward))
        if not by_task:
            return {}
        out = {"reward_hist/all": wandb.Histogram([r for rs in by_task.values() for r in rs], num_bins=32)}
        for task, rewards in sorted(by_task.items()):
            out[f"reward_hist/{task}"] = wandb.Histogram(rewards, num_bins=32)
        return out

    def log_samples(self, groups: list[list[Sample]], step: int) -> Path:
        """Write the step's selected sample rows to samples/step_NNNNNN.jsonl (+ PNGs) and, with wandb, as a
        wandb.Table under TABLE_KEY. Returns the JSONL path."""
        c = self.table_cfg
        picked = select_table_samples(
            groups,
            c.table_best_per_task,
            c.table_worst_per_task,
            c.table_random_per_task,
            seed=self.seed * 1_000_003 + step,
        )
        image_dir = self.samples_dir / f"step_{step:06d}"
        image_dir.mkdir(parents=True, exist_ok=True)
        rows, table_rows = [], []
        for i, (pick, s) in enumerate(picked):
            reference = _small_image(s.reference_image, c.table_image_max_side)
            rendering = _small_image(s.rendered_image, c.table_image_max_side)
            paths = {}
            for name, image in (("reference", reference), ("rendering", rendering)):
                if image is not None:
                    path = image_dir / f"{i:02d}_{s.task}_{name}.png"
                    image.save(path)
                    paths[name] = str(path.relative_to(self.samples_dir))
            failure = s.failure or (f"render:{s.render_error}" if s.render_error else None)
            breakdown = {
                k: (v if isinstance(v, (str, bool)) else _finite(v))
                for k, v in s.reward_breakdown.items()
                if isinstance(v, (int, float, str, bool))
            }
            code = _cut(
                s.code
                if s.code is not None
                else f"[no code extracted; the response:]\n{s.response_text or ''}",
                c.table_code_max_chars,
            )
            rows.append(
                {
                    "step": step,
                    "task": s.task,
                    "pick": pick,
                    "uid": s.uid,
                    "prompt_id": s.prompt_id,
                    "reward": _finite(s.reward),
                    "reward_breakdown": breakdown,
                    "discrepancies": s.discrepancies,
                    "critic": self.critic,
                    "code": code,
                    "failure": failure,
                    "render_error": s.render_error,
                    "policy_version": s.policy_version,
                    "reference_png": paths.get("reference"),
                    "rendering_png": paths.get("rendering"),
                }
            )
            table_rows.append(
                (
                    s.task,
                    pick,
                    reference,
                    rendering,
                    failure or "",
                    code,
                    format_discrepancies(s.discrepancies),
                    self.critic,
                    json.dumps(breakdown, sort_keys=True),
                    _finite(s.reward),
                    s.policy_version,
                )
            )
        jsonl = self.samples_dir / f"step_{step:06d}.jsonl"
        tmp = jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(jsonl)  # whole or absent: a run killed mid-write leaves no half table for the report
        if self.run is not None:
            import wandb  # heavy: wandb, only this path needs it

            table = wandb.Table(columns=TABLE_COLUMNS)
            for task, pick, reference, rendering, *rest in table_rows:
                table.add_data(
                    task,
                    pick,
                    wandb.Image(reference) if reference is not None else None,
                    wandb.Image(rendering) if rendering is not None else None,
                    *rest,
                )
            self.run.log({TABLE_KEY: table}, step=step)
        log.debug("step %d: %d sample rows in %s", step, len(rows), jsonl)
        return jsonl

    def finish(self, exit_code: int = 0) -> None:
        self.progress.close()
        if not self._metrics_file.closed:
            self._metrics_file.close()
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
