"""`python -m pipeline.runlog.report RUN_DIR`: a self-contained HTML report (and its Chromium screenshot) built
from a run's local files; and what a user of the embedded default sees (its offline wandb run holds the image
table, its report opens in Chromium), checked on test_main's from-nothing run by
`check_embedded_default_dashboard`."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import REPO_ROOT, load_config
from pipeline.runlog import report, wandb_offline
from pipeline.runlog.tracking import TABLE_COLUMNS, TABLE_KEY, Tracker
from pipeline.sample import Sample

CHROMIUM = next((p for p in report.CHROMIUM_PATHS if os.access(p, os.X_OK)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
)


def _groups(step: int, rng: np.random.Generator) -> list[list[Sample]]:
    groups = []
    for task, color in (("chart", (200, 40, 40)), ("table", (40, 160, 40)), ("svg", (40, 40, 200))):
        reference = np.full((120, 160, 3), 255, np.uint8)
        reference[30:90, 40:120] = color
        group = []
        for k in range(4):
            s = Sample(task=task, reference_image=reference, prompt_id=f"{task}-{step}", policy_version=step)
            s.code = f"<{task} answer {k} step {step}>"  # markup: must come out escaped
            s.reward = float(np.clip(rng.normal(0.1 * step, 0.4), -1, 1))
            s.reward_breakdown = {"visual_erm_paper": s.reward, "render_success": 1.0}
            if k == 3:
                s.render_error = "timeout"
                s.fail("render", "timeout")
            else:
                rendering = reference.copy()
                rendering[:, :20] = 0
                s.rendered_image = rendering
                s.discrepancies = [
                    {"category": "layout", "severity": 1, "location": "left", "description": "bar"}
                ]
            group.append(s)
        groups.append(group)
    return groups


def _metrics(step: int) -> dict[str, float]:
    """The keys the driver logs (pipeline/main.py, step_metrics.py, the trainer), with plausible values."""
    m = {
        "samples/samples": 12,
        "samples/reward/mean": 0.1 * step,
        "samples/reward/std": 0.3,
        "samples/render/success_rate": 0.75,
        "samples/render_failures/timeout": 3,
        "samples/render_failures/syntax_error": step % 2,
        "samples/failures/timeout": 3,
        "samples/failures/invalid_judgement": 1,
        "samples/judgement/invalid": 1,
        "train/kl": 0.001 * step,
        "train/entropy": 8.0 - step,
        "train/grad_norm": 1.5,
        "train/lr": 1e-4,
        "train/loss": 0.2,
        "perf/step_s": 3.0,
        "perf/wait_for_batch_s": 1.0,
        "perf/weight_sync_s": 0.2,
    }
    for task in ("chart", "table", "svg"):
        m[f"samples/reward/{task}/mean"] = 0.1 * step + {"chart": 0.0, "table": 0.2, "svg": -0.2}[task]
    for stage in ("rollout", "render", "reward"):
        m[f"perf/{stage}_items"] = 12 * (step + 1)
        m[f"perf/{stage}_busy_s"] = 1.0 * (step + 1)
    return m


def _synthetic_run(tmp_path: Path, steps: int = 4) -> Path:
    cfg = load_config(
        None,
        [
            f"run.output_dir={tmp_path}",
            "run.name=synthetic",
            f"run.total_steps={steps}",
            "logging.wandb.mode=disabled",
            "logging.wandb.table_every_steps=2",
        ],
    )
    tracker = Tracker(cfg, cfg.run_dir, commit="c0ffee")
    rng = np.random.default_rng(0)
    for step in range(steps):
        tracker.log_step(_metrics(step), _groups(step, rng), step)
    tracker.log({"eval/reward": 0.3, "eval/chart/reward": 0.2, "eval/table/reward": 0.4}, step=steps - 1)
    tracker.finish()
    return cfg.run_dir


def _assert_not_blank(png: Path, min_height: int = 1500) -> None:
    image = Image.open(png).convert("RGB")
    assert image.height >= min_height, image.size  # the whole page, not one viewport
    pixels = np.asarray(image)
    not_white = (pixels < 240).any(axis=2).mean()
    assert not_white > 0.03, f"screenshot nearly blank ({not_white:.1%} non-white)"
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50  # plots and images, not just text


def _assert_report_html(html: str, min_plots: int) -> None:
    for title in report.SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html, title
    plots = re.findall(r'<img class="plot" alt="([^"]+)" src="data:image/png;base64,', html)
    assert len(plots) >= min_plots, plots
    assert not re.search(r'(src|href)="(https?:)?//', html), (
        "the report must not load anything from a network"
    )
    assert "<script" not in html


@needs_chromium
def test_report_from_tracker_files_has_curves_gallery_and_survives_a_torn_line(tmp_path, caplog):
    run_dir = _synthetic_run(tmp_path)
    # A run killed mid-write leaves half a line; a later run (resume) appends after it.
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "time": 1.0, "samples/rew')
        f.write("\n" + json.dumps({"step": 4, "time": 2e9, "samples/reward/mean": 0.9}) + "\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.runlog.report"):
        run = report.load_run(run_dir)
    assert run.skipped_lines == 1 and "malformed metrics line skipped" in caplog.text
    assert sorted(run.steps) == [0, 1, 2, 3, 4] and run.steps[4]["samples/reward/mean"] == 0.9
    assert run.steps[3]["eval/reward"] == 0.3  # the evaluation merges into its step
    rates = report.throughput(run)
    assert set(rates) == {"rollout", "render", "reward"} and all(len(p) == 3 for p in rates.values())

    html = report.build_html(run, gallery_size=3)
    _assert_report_html(html, min_plots=5)
    assert "1 malformed line(s) skipped" in html and "c0ffee" in html
    gallery = html[html.index("<h2>Samples</h2>") :]
    assert gallery.count("<tr><td>best") == 3 and gallery.count("<tr><td>worst") == 3
    assert gallery.count('alt="rendering"') + gallery.count("render:timeout") >= 6
    assert "&lt;chart answer" in gallery or "&lt;table answer" in gallery or "&lt;svg answer" in gallery
    assert "<chart answer" not in html
    # The best rows come first, highest reward first.
    shown = [float(x) for x in re.findall(r"<td><b>(-?[\d.]+(?:e-?\d+)?)</b>", gallery)]
    assert shown[:3] == sorted(shown[:3], reverse=True) and min(shown[:3]) >= max(shown[3:])

    out, png = tmp_path / "report.html", tmp_path / "report.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.runlog.report", str(run_dir), "-o", str(out), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "malformed metrics line skipped" in proc.stderr
    _assert_report_html(out.read_text(), min_plots=5)
    _assert_not_blank(png)


def test_report_cli_refuses_a_directory_without_metrics(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.runlog.report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2 and "metrics.jsonl not found" in proc.stderr


def test_report_of_a_run_without_samples_or_training_says_so(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "time": 1.0, "eval/reward": 0.1}) + "\n")
    html = report.build_html(report.load_run(tmp_path))
    assert html.count("not logged in this run") == 4  # render, judgement, training, throughput
    assert "no sample rows" in html
    assert html.count('<img class="plot"') == 1  # the reward section still plots the evaluation


def check_embedded_default_dashboard(proc: subprocess.CompletedProcess, run_dir: Path, tmp_path: Path) -> None:
    """What a user of the embedded default sees after a 2-step run with `logging.wandb.table_every_steps=1`: a
    compact progress line per step (no terminal), an offline wandb run holding the image table, and a report
    that opens. Called by test_main's from-nothing run of the embedded default (one run checks both)."""
    assert CHROMIUM is not None, "Debian chromium not installed (apt-get install chromium)"
    # Not a terminal: one compact progress line per step (the full record is at DEBUG).
    lines = [ln for ln in proc.stderr.splitlines() if re.search(r"INFO pipeline: step \d \[\d/2\]", ln)]
    assert len(lines) == 2 and all("reward" in ln and "samples/s" in ln and "ETA" in ln for ln in lines), (
        lines
    )
    assert all(len(ln) < 300 for ln in lines)

    run = wandb_offline.load_run(run_dir, wait_for_exit_s=30)
    assert run.exit_code == 0
    assert run.git_commit and run.config["git_commit"] == run.git_commit
    assert run.config["run"]["total_steps"] == 2
    keys = run.keys()
    for key in (
        "samples/reward/mean",
        "train/loss",
        "perf/step_s",
        "eval/reward",
        "reward_hist/all",
        TABLE_KEY,
    ):
        assert key in keys, key
    tables = run.tables(TABLE_KEY)
    assert [step for step, _ in tables] == [0, 1]
    _, table = tables[-1]
    assert table["columns"] == TABLE_COLUMNS
    col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    tasks = {cells[col["task"]] for cells in table["data"]}
    assert tasks and tasks <= {"chart", "table", "svg"}  # 3 prompts a step, tasks drawn at random
    assert 3 <= len(table["data"]) <= 9
    for cells in table["data"]:
        assert isinstance(cells[col["reward"]], float)
        image = Image.open(cells[col["reference"]])
        assert min(image.size) > 16
        assert (cells[col["rendering"]] is not None) or cells[col["failure"]]
        assert cells[col["critic"]].startswith("oracle")  # the embedded default's critic, named on every row
    # The oracle's discrepancies are each pair's own: over the logged samples of different references that
    # rendered, not one list for all (the tiny critic once listed the same "Team" error under every table).
    rows = [json.loads(line) for f in sorted((run_dir / "samples").glob("step_*.jsonl"))
            for line in f.read_text().splitlines()]
    by_reference = {r["prompt_id"]: json.dumps(r["discrepancies"]) for r in rows if r.get("rendering_png")}
    assert len(set(by_reference.values())) >= 2 or len(by_reference) < 2, by_reference

    png = tmp_path / "report.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.runlog.report", str(run_dir), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (run_dir / "report.html").read_text()
    _assert_report_html(html, min_plots=4)
    assert html.count("<tr><td>best") >= 1
    assert "listed by: oracle" in html and "discrepancies listed by" in html
    _assert_not_blank(png, min_height=1200)
