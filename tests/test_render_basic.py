"""Render API behaviour: contract, chart capture semantics, determinism, sandbox layers and refusal, crash
recovery, and the CLI."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.render import RenderConfig, RenderFailure, RenderResult, render
from pipeline.render.forkserver import ChartRenderer, SandboxUnavailableError, SvgRenderer

REPO = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "render_cases"
RANDOM_CHART = """
import matplotlib.pyplot as plt, numpy as np, random
labels = {'north', 'south', 'east', 'west', 'centre'}   # set order depends on the hash seed
values = np.random.rand(len(labels)) * 10 + random.random()
plt.bar(list(labels), values)
plt.title('random %.6f' % np.random.rand())
"""
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle cx="10" cy="10" r="8" fill="red"/></svg>'


@pytest.fixture(scope="module")
def chart():
    r = ChartRenderer()
    yield r
    r.close()


def test_render_contract_for_each_kind():
    for kind, code in [("chart", RANDOM_CHART), ("svg", SVG), ("table", "| a | b |\n|---|---|\n| 1 | 2 |")]:
        result = render(kind, code, size=(200, 100))
        assert result.ok and result.failure is None, (kind, result.detail)
        assert result.image.shape == (100, 200, 3) and result.image.dtype == np.uint8
        assert result.timings["total_s"] > 0
        clone = pickle.loads(pickle.dumps(result))
        assert np.array_equal(clone.image, result.image)
    assert render("chart", "").failure == RenderFailure.INVALID_INPUT
    assert render("video", "x").failure == RenderFailure.INVALID_INPUT
    assert render("svg", SVG, size=5).failure == RenderFailure.INVALID_INPUT
    assert render("svg", SVG, size=(8, 100000)).failure == RenderFailure.INVALID_INPUT
    assert render("svg", SVG, size=(np.int64(40), 30)).image.shape == (30, 40, 3)  # numpy ints are fine
    assert render("chart", "x" * 300_000).failure == RenderFailure.OUTPUT_TOO_LARGE
    assert RenderFailure("timeout") == "timeout"  # a str enum: JSON- and log-friendly


def test_default_sizes_follow_config():
    cfg = RenderConfig()
    assert cfg.chart.timeout_s == 15 and cfg.svg.size == (336, 336) and cfg.svg.timeout_s == 10
    assert max(cfg.table.size) <= 768
    assert render("svg", SVG).image.shape == (336, 336, 3)


def test_chart_captures_saved_figure_even_if_closed(chart):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.savefig('out.png')\nplt.close()\n"
    result = chart.render(code)
    assert result.ok, result.detail
    oo = ("from matplotlib.figure import Figure\nfig = Figure()\nax = fig.add_subplot()\nax.plot([3, 1, 2])\n"
          "fig.savefig('x.png')\n")
    assert chart.render(oo).ok


def test_chart_of_several_figures_is_the_current_one(chart):
    """One figure per chart (README, "What is the figure"): not a stack of every figure at its own scale."""
    one = chart.render("import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 2))\nplt.plot([2, 1])")
    two = chart.render("import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 2))\nplt.plot([1, 2])\n"
                       "plt.figure(figsize=(4, 2))\nplt.plot([2, 1])")
    assert one.ok and two.ok
    assert np.array_equal(one.image, two.image)


def test_rcparams_do_not_leak_between_snippets(chart):
    plain = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
    before = chart.render(plain).image
    chart.render("import matplotlib.pyplot as plt\nplt.rcParams['axes.facecolor'] = 'black'\nplt.plot([1])")
    assert np.array_equal(chart.render(plain).image, before)


def test_identical_pixels_across_workers(chart):
    other = ChartRenderer()
    try:
        a, b, c = chart.render(RANDOM_CHART), other.render(RANDOM_CHART), chart.render(RANDOM_CHART)
    finally:
        other.close()
    assert a.ok and b.ok
    assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
    svg_a, svg_b = SvgRenderer(), SvgRenderer()
    try:
        assert np.array_equal(svg_a.render(SVG).image, svg_b.render(SVG).image)
    finally:
        svg_a.close()
        svg_b.close()


@pytest.mark.skipif(os.getuid() != 0, reason="the full sandbox needs root (uid switch, namespaces)")
def test_all_required_layers_active_and_environment_scrubbed(chart):
    required = RenderConfig().sandbox.required_layers
    assert all(chart.layers[name].startswith("ok") for name in required), chart.layers
    with open(f"/proc/{chart.zygote_pid}/environ", "rb") as f:
        keys = {kv.split(b"=", 1)[0] for kv in f.read().split(b"\0") if kv}
    assert keys <= {b"PYTHONHASHSEED", b"OPENBLAS_NUM_THREADS", b"OMP_NUM_THREADS", b"MKL_NUM_THREADS",
                    b"MPLBACKEND", b"LANG", b"PATH", b"MPLCONFIGDIR"}


def test_refuses_when_a_required_layer_is_missing():
    cfg = RenderConfig()
    cfg.sandbox.disabled_layers = ["seccomp"]
    with pytest.raises(SandboxUnavailableError, match="seccomp"):
        ChartRenderer(cfg)
    cfg.sandbox.allow_missing_layers = True  # explicit opt-out: runs, the other layers still contain it
    renderer = ChartRenderer(cfg)
    try:
        result = renderer.render("import socket\nsocket.create_connection(('127.0.0.1', 80))")
        assert result.failure == RenderFailure.SANDBOX_VIOLATION  # empty network namespace
        assert renderer.render("import os\nos.fork()\nos._exit(0)").failure != RenderFailure.SANDBOX_VIOLATION
    finally:
        renderer.close()


def test_killed_zygote_gives_crashed_then_recovers():
    renderer = ChartRenderer()
    try:
        pid = renderer.zygote_pid
        out: list[RenderResult] = []
        worker = threading.Thread(target=lambda: out.append(renderer.render("while True: pass", timeout_s=10)))
        worker.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=30)
        assert out and out[0].failure == RenderFailure.CRASHED
        again = renderer.render("import matplotlib.pyplot as plt\nplt.plot([1, 2])")
        assert again.ok and renderer.zygote_pid != pid
    finally:
        renderer.close()


def test_killed_browser_recovers():
    from pipeline.render.table import TableRenderer

    table = TableRenderer()
    try:
        assert table.render("| a |\n|---|\n| 1 |").ok
        table._kill_browser()
        time.sleep(0.5)
        first = table.render("| a |\n|---|\n| 2 |")
        assert first.ok or first.failure == RenderFailure.CRASHED
        assert table.render("| a |\n|---|\n| 3 |").ok
    finally:
        table.close()


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.render", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("kind,case,min_colours", [("chart", "bar_chart.py", 20), ("svg", "icon.svg", 4),
                                                   ("table", "table.md", 2)])
def test_cli_renders_typical_inputs(tmp_path, kind, case, min_colours):
    out = tmp_path / f"{kind}.png"
    done = _cli(kind, str(CASES / case), "-o", str(out), "--size", "480x360")
    assert done.returncode == 0, done.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (360, 480, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= min_colours
    assert (image < 128).any(), "something dark (text, lines) was drawn"


def test_cli_failure_is_one_json_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("while True: pass\n")
    done = _cli("chart", str(bad), "-o", str(tmp_path / "x.png"), "--timeout", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert json.loads(lines[0]) == {"failure": "timeout", "detail": "exceeded the 1 s wall-clock limit"}
    assert not (tmp_path / "x.png").exists()


def test_landlock_is_what_stops_file_reads():
    """Ablation: without Landlock a world-readable file outside the allowed paths is readable, so the
    hostile suite's file cases really exercise Landlock (not just file modes)."""
    cfg = RenderConfig()
    cfg.sandbox.disabled_layers = ["landlock"]
    cfg.sandbox.allow_missing_layers = True
    renderer = ChartRenderer(cfg)
    try:
        assert renderer.render("open('/etc/hostname').read()").failure == RenderFailure.NO_FIGURE
    finally:
        renderer.close()
    assert render("chart", "open('/etc/hostname').read()").failure == RenderFailure.SANDBOX_VIOLATION


def test_pandas_snippets_use_the_preloaded_heavy_zygote(chart):
    code = "import pandas as pd\nimport matplotlib.pyplot as plt\npd.Series([1, 3, 2]).plot(kind='bar')\n"
    result = chart.render(code)
    assert result.ok, result.detail
    assert chart._heavy is not None and chart._heavy.zygote_pid != chart.zygote_pid
    assert np.array_equal(chart.render(code).image, result.image)
