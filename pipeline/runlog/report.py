"""A run's report from its local files, without wandb.

    python -m pipeline.report RUN_DIR [-o OUT.html] [--png OUT.png]


Reads what the Tracker leaves in RUN_DIR (metrics.jsonl, samples/step_*.jsonl + PNGs, run.json) and writes one
self-contained HTML file (plots and images inline as data URIs, no script, no network): reward curves overall
and per task, render failures by type over steps, judgement failures, training curves (KL, entropy, grad norm,
lr), per-stage throughput, and a gallery of the best and worst samples. `--png` also screenshots that HTML
with Chromium (Playwright), e.g. to attach to a message.

A metrics.jsonl line that does not parse (a run killed mid-write) is skipped with a warning and counted in the
report's header; so is a malformed sample row.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import itertools
import json
import logging
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.runlog.layout import RunLayout

log = logging.getLogger("pipeline.runlog.report")

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")  # Debian: the binary, then its wrapper
SECTION_TITLES = ("Reward", "Render failures", "Judgement failures", "Training", "Throughput", "Samples")


# ---------------------------------------------------------------------------------------------------- data


@dataclass
class RunData:
    run_dir: Path
    steps: dict[int, dict[str, float]]  # step → every scalar logged at that step (later logs win)
    records: list[dict[str, Any]]  # metrics.jsonl lines in order (with "time"), for rates over wall time
    samples: list[dict[str, Any]]  # sample rows, each with "image_dir"-relative PNG paths resolved
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    skipped_lines: int = 0

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = [(s, m[key]) for s, m in sorted(self.steps.items()) if key in m]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def keys(self, prefix: str, suffix: str = "") -> list[str]:
        return sorted(
            {k for m in self.steps.values() for k in m if k.startswith(prefix) and k.endswith(suffix)}
        )


def _read_jsonl(path: Path, what: str) -> tuple[list[dict[str, Any]], int]:
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row, why = None, f"{e.msg} at column {e.colno}"
            else:
                why = "not a JSON object"
            if not isinstance(row, dict):
                bad += 1
                log.warning(
                    "%s:%d: malformed %s line skipped (%s; a run killed mid-write?)", path, number, what, why
                )
                continue
            rows.append(row)
    return rows, bad


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    metrics_path = RunLayout(run_dir).metrics
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{metrics_path} not found: is {run_dir} a run directory (run.output_dir/run.name)?"
        )
    records, skipped = _read_jsonl(metrics_path, "metrics")
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    good_records = []
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            skipped += 1
            log.warning("%s: a metrics record without an integer step skipped", metrics_path)
            continue
        good_records.append(r)
        steps[step].update(
            {
                k: float(v)
                for k, v in r.items()
                if k not in ("step", "time")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
            }
        )
    samples = []
    samples_dir = RunLayout(run_dir).samples
    for path in sorted(samples_dir.glob("step_*.jsonl")):
        rows, bad = _read_jsonl(path, "sample")
        skipped += bad
        for row in rows:
            for key in ("reference_png", "rendering_png"):
                row[key] = samples_dir / row[key] if isinstance(row.get(key), str) else None
            samples.append(row)
    info = {}
    if RunLayout(run_dir).run_info.is_file():
        try:
            info = json.loads(RunLayout(run_dir).run_info.read_text())
        except json.JSONDecodeError:
            log.warning("%s: malformed run.json ignored", run_dir)
    return RunData(run_dir, dict(steps), good_records, samples, info, skipped)


# --------------------------------------------------------------------------------------------------- plots


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt  # heavy: matplotlib, only this path needs it

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_uri(path: Optional[Path]) -> Optional[str]:
    if path is None or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _axes(n: int, run: RunData):
    import matplotlib  # heavy: matplotlib, only this path needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib, only this path needs it

    cols = min(n, 2)
    rows = math.ceil(n / cols)
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib, only this path needs it

    fig, axes = plt.subplots(
        rows, cols, figsize=(6.2 * cols, 3.4 * rows), squeeze=False, layout="constrained"
    )
    fig.get_layout_engine().set(h_pad=0.15)
    flat = [a for row in axes for a in row]
    for extra in flat[n:]:
        extra.set_visible(False)
    for ax in flat[:n]:
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if run.steps:  # every plot spans the run's steps, also one that holds a single point
            ax.set_xlim(min(run.steps) - 0.5, max(run.steps) + 0.5)
    return fig, flat[:n]


def _plot_lines(ax, run: RunData, keys: list[str], label_from: int = 1) -> bool:
    drawn = False
    for key in keys:
        x, y = run.series(key)
        if x:
            ax.plot(x, y, marker="o", markersize=3, label="/".join(key.split("/")[label_from:]) or key)
            drawn = True
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    return drawn


def reward_plot(run: RunData) -> Optional[str]:
    tasks = [k.split("/")[2] for k in run.keys("samples/reward/", "/mean") if k.count("/") == 3]
    if not run.series("samples/reward/mean")[0] and not run.series("eval/reward")[0]:
        return None
    fig, (overall, per_task) = _axes(2, run)
    x, y = run.series("samples/reward/mean")
    if x:
        overall.plot(x, y, marker="o", markersize=3, label="train mean")
        sx, sd = run.series("samples/reward/std")
        if sx == x:
            overall.fill_between(
                x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.2, label="± std"
            )
    ex, ey = run.series("eval/reward")
    if ex:
        overall.plot(ex, ey, marker="s", linestyle="--", label="eval (greedy)")
    overall.set_title("overall")
    overall.legend(fontsize=8)
    for task in tasks:
        tx, ty = run.series(f"samples/reward/{task}/mean")
        (line,) = per_task.plot(tx, ty, marker="o", markersize=3, label=f"{task} train")
        ex, ey = run.series(f"eval/{task}/reward")
        if ex:
            per_task.plot(ex, ey, marker="s", linestyle="--", color=line.get_color(), label=f"{task} eval")
    per_task.set_title("per task")
    if tasks:
        per_task.legend(fontsize=8)
    return _figure_uri(fig)


def _stacked_counts(ax, run: RunData, keys: list[str], label_from: int) -> None:
    steps = sorted(run.steps)
    bottom = [0.0] * len(steps)
    for key in keys:
        counts = [run.steps[s].get(key, 0.0) for s in steps]
        ax.bar(steps, counts, bottom=bottom, label="/".join(key.split("/")[label_from:]))
        bottom = [a + b for a, b in zip(bottom, counts)]
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)


def render_failure_plot(run: RunData) -> Optional[str]:
    keys = run.keys("samples/render_failures/")
    x, y = run.series("samples/render/success_rate")
    if not keys and not x:
        return None
    fig, (counts, rate) = _axes(2, run)
    if keys:
        _stacked_counts(counts, run, keys, label_from=2)
    else:
        counts.text(0.5, 0.5, "no render failures", ha="center", va="center", transform=counts.transAxes)
    counts.set_title("failures by type (per step)")
    rate.plot(x, y, marker="o", markersize=3)
    rate.set_ylim(-0.05, 1.05)
    rate.set_title("render success rate")
    return _figure_uri(fig)


def judgement_plot(run: RunData) -> Optional[str]:
    keys = [k for k in run.keys("samples/failures/")]
    x, y = run.series("samples/judgement/invalid")
    if not keys and not x:
        return None
    fig, (invalid, reasons) = _axes(2, run)
    invalid.plot(x, y, marker="o", markersize=3, color="tab:red")
    invalid.set_title("invalid judgements (per step)")
    if keys:
        _stacked_counts(reasons, run, keys, label_from=2)
    else:
        reasons.text(0.5, 0.5, "no failures", ha="center", va="center", transform=reasons.transAxes)
    reasons.set_title("all sample failures by reason")
    return _figure_uri(fig)


def training_plot(run: RunData) -> Optional[str]:
    keys = ["train/kl", "train/entropy", "train/grad_norm", "train/lr", "train/loss"]
    if not any(run.series(k)[0] for k in keys):
        return None
    fig, axes = _axes(len(keys), run)
    for ax, key in zip(axes, keys):
        _plot_lines(ax, run, [key])
        ax.set_title(key.split("/", 1)[1])
        if ax.get_legend():
            ax.get_legend().remove()
    return _figure_uri(fig)


def throughput(run: RunData) -> dict[str, list[tuple[int, float]]]:
    """Per-stage items/s between consecutive training records (perf/<stage>_items counters are cumulative)."""
    train = [r for r in run.records if "perf/step_s" in r and isinstance(r.get("time"), (int, float))]
    stages = sorted(
        {
            k[len("perf/") : -len("_items")]
            for r in train
            for k in r
            if k.startswith("perf/") and k.endswith("_items")
        }
    )
    out: dict[str, list[tuple[int, float]]] = {}
    for stage in stages:
        key = f"perf/{stage}_items"
        points = []
        for prev, cur in itertools.pairwise(train):
            dt = cur["time"] - prev["time"]
            if key in prev and key in cur and dt > 0 and cur[key] >= prev[key]:  # a resume resets the counter
                points.append((cur["step"], (cur[key] - prev[key]) / dt))
        out[stage] = points
    return out


def throughput_plot(run: RunData) -> Optional[str]:
    rates = throughput(run)
    time_keys = ["perf/step_s", "perf/wait_for_batch_s", "perf/weight_sync_s"]
    if not rates and not any(run.series(k)[0] for k in time_keys):
        return None
    fig, (items, times) = _axes(2, run)
    for stage, points in rates.items():
        if points:
            items.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=stage)
    items.set_title("items/s per stage")
    if any(rates.values()):
        items.legend(fontsize=8)
    else:
        items.text(
            0.5, 0.5, "needs two steps", ha="center", va="center", transform=items.transAxes, color="gray"
        )
    _plot_lines(times, run, time_keys)
    times.set_title("seconds per step")
    return _figure_uri(fig)


# ---------------------------------------------------------------------------------------------------- html

CSS = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 28px; }
.meta { color: #555; font-size: 14px; } .warn { color: #a40; }
img.plot { max-width: 100%; }
table.kv td { padding: 2px 12px 2px 0; font-size: 14px; }
table.gallery { border-collapse: collapse; width: 100%; font-size: 12px; }
table.gallery th, table.gallery td { border: 1px solid #ddd; padding: 6px; vertical-align: top; }
table.gallery img { max-width: 256px; max-height: 256px; border: 1px solid #eee; }
pre { white-space: pre-wrap; word-break: break-all; max-height: 260px; overflow: hidden; margin: 0;
      font-size: 11px; background: #f7f7f7; padding: 4px; }
.failure { color: #b00; font-weight: bold; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>\n{body}\n</section>"


def _plot_section(title: str, uri: Optional[str]) -> str:
    body = (
        f'<img class="plot" alt="{_esc(title)}" src="{uri}">'
        if uri
        else '<p class="meta">not logged in this run</p>'
    )
    return _section(title, body)


def _fmt(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.4g}"


def _gallery_rows(samples: list[dict[str, Any]], heading: str) -> str:
    rows = []
    for s in samples:
        ref, rend = _file_uri(s.get("reference_png")), _file_uri(s.get("rendering_png"))
        reference = f'<img alt="reference" src="{ref}">' if ref else "–"
        rendering = f'<img alt="rendering" src="{rend}">' if rend else ""
        if s.get("failure") or not rend:
            rendering += f'<div class="failure">{_esc(s.get("failure") or "no rendering")}</div>'
        critic = f'<div class="meta">listed by: {_esc(s["critic"])}</div>' if s.get("critic") else ""
        discrepancies = critic + (
            "<br>".join(
                _esc(
                    f"[{d.get('severity', '?')}] {d.get('category', '?')} @ {d.get('location', '')}: "
                    f"{d.get('description', '')}"
                )
                if isinstance(d, dict)
                else _esc(d)
                for d in s.get("discrepancies") or []
            )
            or '<span class="meta">none listed</span>'
        )
        breakdown = "<br>".join(
            f"{_esc(k)}: {_esc(_fmt(v) if isinstance(v, (int, float)) else v)}"
            for k, v in (s.get("reward_breakdown") or {}).items()
        )
        rows.append(
            f"<tr><td>{_esc(heading)}<br>step {_esc(s.get('step'))}<br>{_esc(s.get('task'))}<br>"
            f"policy v{_esc(s.get('policy_version'))}</td>"
            f"<td>{reference}</td><td>{rendering}</td>"
            f"<td><pre>{_esc(s.get('code') or '')}</pre></td><td>{discrepancies}</td>"
            f"<td><b>{_esc(_fmt(s.get('reward')))}</b><br>{breakdown}</td></tr>"
        )
    return "\n".join(rows)


def gallery(samples: list[dict[str, Any]], per_side: int) -> str:
    scored = {}
    for s in samples:  # one row per sample, whichever table listed it
        if isinstance(s.get("reward"), (int, float)):
            scored[s.get("uid") or id(s)] = s
    ranked = sorted(scored.values(), key=lambda s: s["reward"], reverse=True)
    if not ranked:
        return (
            '<p class="meta">no sample rows (samples/step_*.jsonl): none logged yet, or '
            "logging.wandb.table_every_steps=0</p>"
        )
    best = ranked[:per_side]
    worst = [s for s in ranked[::-1][:per_side] if all(s is not b for b in best)]
    head = (
        "<tr><th>pick</th><th>reference</th><th>rendering</th><th>code</th><th>discrepancies</th>"
        "<th>reward</th></tr>"
    )
    return (
        f'<table class="gallery">{head}\n{_gallery_rows(best, "best")}\n{_gallery_rows(worst, "worst")}'
        f"</table>"
    )


def build_html(run: RunData, gallery_size: int = 4) -> str:
    info = run.info
    steps = sorted(run.steps)
    _, rewards = run.series("samples/reward/mean")
    _, eval_rewards = run.series("eval/reward")
    throughput_means = {
        stage: sum(p[1] for p in pts) / len(pts) for stage, pts in throughput(run).items() if pts
    }
    summary = [
        ("run", info.get("name", run.run_dir.name)),
        ("directory", run.run_dir),
        ("git commit", info.get("git_commit") or "unknown"),
        ("discrepancies listed by", info.get("critic") or "–"),
        ("steps logged", f"{len(steps)} ({steps[0]}..{steps[-1]})" if steps else "none"),
        ("train reward (first → last)",
         f"{_fmt(rewards[0])} → {_fmt(rewards[-1])}" if rewards else "–"),
        ("eval reward (last)", _fmt(eval_rewards[-1]) if eval_rewards else "–"),
        ("mean items/s", ", ".join(f"{k} {v:.3g}" for k, v in throughput_means.items()) or "–"),
        ("sample rows", len(run.samples)),
    ]
    header = '<table class="kv">' + "".join(
        f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in summary
    )
    header += "</table>"
    if run.skipped_lines:
        header += (
            f'<p class="warn">{run.skipped_lines} malformed line(s) skipped (a run killed mid-write?); '
            f"see the warnings of the report command.</p>"
        )
    body = "\n".join(
        [
            _plot_section("Reward", reward_plot(run)),
            _plot_section("Render failures", render_failure_plot(run)),
            _plot_section("Judgement failures", judgement_plot(run)),
            _plot_section("Training", training_plot(run)),
            _plot_section("Throughput", throughput_plot(run)),
            _section("Samples", gallery(run.samples, gallery_size)),
        ]
    )
    title = f"Run report: {info.get('name', run.run_dir.name)}"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><h1>{_esc(title)}</h1>\n{header}\n{body}\n</body></html>\n"
    )


def screenshot(
    html_path: Path, png_path: Path, chromium: Optional[str] = None, width: int = 1280, timeout_s: float = 60
) -> Path:
    """A full-page PNG of the report, taken by headless Chromium with JavaScript off and the network cut."""
    from playwright.sync_api import sync_playwright  # heavy: Playwright, only this path needs it

    chromium = chromium or next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)
    if chromium is None:
        raise FileNotFoundError(
            f"Chromium not found at {' or '.join(CHROMIUM_PATHS)} (apt-get install chromium)"
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            chromium_sandbox=False,
            timeout=timeout_s * 1000,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_context(
                java_script_enabled=False, offline=True, viewport={"width": width, "height": 900}
            ).new_page()
            page.goto(Path(html_path).resolve().as_uri(), timeout=timeout_s * 1000, wait_until="load")
            page.screenshot(path=str(png_path), full_page=True, timeout=timeout_s * 1000)
        finally:
            browser.close()
    return Path(png_path)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (run.output_dir/run.name)")
    parser.add_argument("-o", "--output", type=Path, help="HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--png", type=Path, help="also write a full-page screenshot here (Chromium)")
    parser.add_argument(
        "--gallery", type=int, default=4, help="best and worst samples shown (default: %(default)s)"
    )
    parser.add_argument("--chromium", help="Chromium executable for --png (default: Debian's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        run = load_run(args.run_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.output or RunLayout(args.run_dir).report
    out.write_text(build_html(run, args.gallery), encoding="utf-8")
    print(f"report: {out} ({out.stat().st_size / 1024:.0f} KiB)")
    if args.png:
        print(f"screenshot: {screenshot(out, args.png, args.chromium)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
