"""Render fidelity on real-world code (issue 18): what a user's chart, SVG and table really look like.

Charts that need an automatic triangulation render; "the figure" of a script is what it would save (README,
"What is the figure"), with savefig's settings; tables are captured whole (or fail as output_too_large when
they would be truncated) and small ones fill the image; size limits are per kind, and a large legitimate SVG
passes while canvas and entity bombs stay contained.
"""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.render import RenderConfig, RenderFailure
from pipeline.render.forkserver import ChartRenderer, SvgRenderer
from pipeline.render.image import content_bbox
from pipeline.render.table import TableRenderer

F = RenderFailure
P = "import matplotlib.pyplot as plt\nimport numpy as np\n"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chart():
    r = ChartRenderer()
    yield r
    r.close()


@pytest.fixture(scope="module")
def table():
    r = TableRenderer()
    yield r
    r.close()


def _ink(image: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - 255).max(axis=2) > 40).sum())


# ------------------------------------------------------------------------------------------ triangulation
TRIANGULATION = {
    "triplot": "plt.triplot(np.random.rand(30), np.random.rand(30))",
    "tricontour": "x, y = np.random.rand(2, 40)\nplt.tricontour(x, y, x * y, levels=6)",
    "tricontourf": "x, y = np.random.rand(2, 40)\nplt.tricontourf(x, y, np.sin(6 * x) + y)\nplt.colorbar()",
    "tripcolor": "x, y = np.random.rand(2, 40)\nplt.tripcolor(x, y, x + y, shading='gouraud')",
    "plot_trisurf": "ax = plt.figure().add_subplot(projection='3d')\nx, y = np.random.rand(2, 50)\n"
                    "ax.plot_trisurf(x, y, x ** 2 + y, cmap='viridis')",
    "tri interpolation": "import matplotlib.tri as mtri\nx, y = np.random.rand(2, 40)\n"
                         "f = mtri.LinearTriInterpolator(mtri.Triangulation(x, y), x * y)\n"
                         "xi, yi = np.meshgrid(np.linspace(0, 1, 30), np.linspace(0, 1, 30))\n"
                         "plt.contourf(xi, yi, f(xi, yi))",
    "scipy griddata": "from scipy.interpolate import griddata\nx, y = np.random.rand(2, 60)\n"
                      "xi, yi = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 1, 40))\n"
                      "plt.contourf(xi, yi, griddata((x, y), np.sin(6 * x) * y, (xi, yi), method='cubic'))",
}


@pytest.mark.parametrize("name", list(TRIANGULATION))
def test_triangulation_charts_render(chart, name):
    """Qhull opens /dev/null for writing; before /dev/null was writable these all failed with
    "RuntimeError: Could not open devnull"."""
    result = chart.render(P + TRIANGULATION[name])
    assert result.ok, (name, result.failure, result.detail)
    assert _ink(result.image) > 2000, "something was drawn"


# ------------------------------------------------------------------------------------- what is the figure
def _corner(image: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in image[2, 2])


def test_last_savefig_wins_over_later_figures_and_clf(chart):
    red = P + "plt.figure(); plt.bar([1, 2], [3, 4], color='red'); plt.savefig('a.png')\n"
    blue_after = red + "plt.figure(); plt.bar([1, 2], [3, 4], color='blue')\n"
    cleared = red + "plt.clf()\n"
    alone = chart.render(red)
    assert alone.ok
    for code in (blue_after, cleared):
        result = chart.render(code)
        assert result.ok, result.detail
        assert np.array_equal(result.image, alone.image), "not the saved figure as it was when saved"
    resaved = blue_after + "plt.savefig('b.png')\n"
    img = chart.render(resaved).image
    blue = (img[..., 2] > 200) & (img[..., 0] < 60)
    assert blue.sum() > 5000 and not ((img[..., 0] > 200) & (img[..., 2] < 60)).any()


def test_without_savefig_the_current_figure(chart):
    """No savefig: the figure `plt.savefig()` appended to the script would save (the current one)."""
    first = "plt.figure(1); plt.plot([1, 3, 2], color='green')\n"
    second = "plt.figure(2); plt.bar([1, 2], [2, 1], color='purple')\n"
    reactivated = chart.render(P + first + second + "plt.figure(1)\n")
    only_first = chart.render(P + first)
    assert reactivated.ok and np.array_equal(reactivated.image, only_first.image)
    last = chart.render(P + first + second)
    assert np.array_equal(last.image, chart.render(P + second).image)
    shown_then_closed = chart.render(P + second + "plt.show()\nplt.close('all')\n")
    assert shown_then_closed.ok and np.array_equal(shown_then_closed.image, last.image)


def test_savefig_settings_are_honoured(chart):
    plot = P + "plt.plot([1, 3, 2])\n"
    assert _corner(chart.render(plot + "plt.savefig('a.png', facecolor='#808080')").image) == (128, 128, 128)
    # transparent=True: the (black) figure background is gone, composited on white
    black = P + "plt.figure(facecolor='black'); plt.plot([1, 3, 2])\n"
    assert _corner(chart.render(black + "plt.savefig('a.png')").image) == (0, 0, 0)
    assert _corner(chart.render(black + "plt.savefig('a.png', transparent=True)").image) == (255, 255, 255)
    # rcParams' savefig settings (a style sheet's) apply with or without an explicit savefig call
    rc = "plt.rcParams['savefig.facecolor'] = '#ffff00'\n"
    assert _corner(chart.render(P + rc + "plt.plot([1, 2])").image) == (255, 255, 0)
    assert _corner(chart.render(P + rc + "plt.plot([1, 2])\nplt.show()").image) == (255, 255, 0)
    # bbox_inches='tight' saves only the drawn area: a small axes in a big figure fills the image
    small_axes = P + "plt.figure(figsize=(8, 6)); plt.axes([0.4, 0.4, 0.2, 0.2]).plot([1, 3, 2])\n"
    loose, tight = chart.render(small_axes + "plt.savefig('a.png')"), \
        chart.render(small_axes + "plt.savefig('a.png', bbox_inches='tight', dpi=300)")
    assert loose.ok and tight.ok, tight.detail

    def ink_height(img):
        top, bottom, _, _ = content_bbox(img)
        return bottom - top
    assert ink_height(tight.image) > 2.5 * ink_height(loose.image)
    # the saved figure's size in pixels (dpi) only sets resolution: same picture
    assert np.abs(chart.render(plot + "plt.savefig('a.png', dpi=300)").image.astype(int)
                  - chart.render(plot).image.astype(int)).mean() < 1.0


def test_huge_saved_area_fails_with_reason(chart):
    result = chart.render(P + "plt.plot([1, 2])\nplt.text(1e4, 1e4, 'far away')\nplt.savefig('a.png', "
                          "bbox_inches='tight')")
    assert result.failure == F.OUTPUT_TOO_LARGE and "max_side_px" in result.detail


def _benchmark():
    spec = importlib.util.spec_from_file_location("render_benchmark", REPO / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SAVED_SCRIPTS = {
    "ggplot, facecolor": "plt.style.use('ggplot')\nfig, ax = plt.subplots()\nax.bar(range(5), [3, 1, 4, 1, 5])\n"
                         "fig.savefig('g.png', facecolor=fig.get_facecolor())\n",
    "tight, 200 dpi": "fig, axs = plt.subplots(1, 2, figsize=(8, 3))\naxs[0].plot([1, 3, 2]); axs[1].hist("
                      "np.random.randn(300))\nfig.suptitle('two panels')\nfig.savefig('t.png', dpi=200, "
                      "bbox_inches='tight')\n",
    "two figures, show": "plt.figure(); plt.plot([1, 2])\nplt.figure(); plt.scatter([1, 2, 3], [3, 1, 2])\n"
                         "plt.title('second')\nplt.show()\n",
}


@pytest.mark.parametrize("name", list(SAVED_SCRIPTS))
def test_chart_matches_what_the_script_itself_saves(chart, tmp_path, name):
    """The sandboxed picture is the one the script's own run (plain python, its last saved PNG, or the
    current figure) gives, fitted into the same size: only anti-aliasing at a different dpi differs."""
    path = tmp_path / "script.py"
    path.write_text(P + SAVED_SCRIPTS[name])
    plain = _benchmark().PlainRenderer()
    try:
        reference = plain.render("chart", path, (640, 480))
    finally:
        plain.close()
    assert not isinstance(reference, str), reference
    result = chart.render(path.read_text())
    assert result.ok, result.detail
    mean_diff = np.abs(result.image.astype(int) - reference.astype(int)).mean()
    assert mean_diff < 4.0, f"{name}: mean |diff| {mean_diff:.2f}"


# ------------------------------------------------------------------------------------------------ tables
def _html_table(rows: int) -> str:
    """An HTML table whose first data row is cyan and last row magenta (to see what was captured)."""
    body = "".join(f"<tr{' style=background:#00ffff' if i == 0 else ' style=background:#ff00ff' if i == rows - 1 else ''}>"
                   f"<td>{i}</td><td>item {i}</td><td>{i * 3.14:.2f}</td><td>row note {i}</td></tr>"
                   for i in range(rows))
    return f"<table><tr><th>#</th><th>name</th><th>value</th><th>note</th></tr>{body}</table>"


def _has(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(image.astype(int) - np.array(rgb)).max(axis=2) < tol).sum())


def test_177_row_table_renders_whole(table):
    result = table.render(_html_table(177))
    assert result.ok, result.detail
    assert result.image.shape == (768, 768, 3)
    assert _has(result.image, (0, 255, 255)) > 0 and _has(result.image, (255, 0, 255)) > 0, \
        "first and last rows must both be in the image (the 1,024 px viewport used to cut it at ~19 rows)"
    top, bottom, _, _ = content_bbox(result.image)
    assert bottom - top > 700, "scaled down to the image height, whole"


def test_table_over_the_page_cap_fails_as_truncated(table):
    result = table.render(_html_table(400))
    assert result.failure == F.OUTPUT_TOO_LARGE
    assert "render.table.max_page" in result.detail and "truncated" in result.detail
    cfg = RenderConfig()
    cfg.table.max_page = (4096, 16384)  # the cap is the configured one
    bigger = TableRenderer(cfg)
    try:
        assert bigger.render(_html_table(400)).ok
    finally:
        bigger.close()


def test_small_table_is_cropped_and_scaled_up_crisply(table):
    code = "| a | b |\n|---|---|\n| 1 | 2 |"
    cfg = RenderConfig()
    cfg.table.max_upscale = 1.0
    plain = TableRenderer(cfg)
    try:
        natural = plain.render(code)
    finally:
        plain.close()
    scaled = table.render(code)
    assert natural.ok and scaled.ok
    n_top, n_bottom, n_left, n_right = content_bbox(natural.image)
    s_top, s_bottom, s_left, s_right = content_bbox(scaled.image)
    assert abs((s_right - s_left) / (n_right - n_left) - RenderConfig().table.max_upscale) < 0.15
    # Re-rasterised, not resampled: strokes stay solid (pure-dark pixels grow with the area, not blur away)
    dark = lambda img: int((img.max(axis=2) < 60).sum())  # noqa: E731
    assert dark(scaled.image) > 3 * dark(natural.image)


# ----------------------------------------------------------------------------------- size limits per kind
def world_map_svg(target_chars: int = 1_200_000, seed: int = 0) -> str:
    """Thousands of irregular filled outlines with long path data, like a detailed world map (~1.2 MB)."""
    rng = random.Random(seed)
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="1000" viewBox="0 0 2000 1000">'
             '<rect width="2000" height="1000" fill="#cfe8ff"/>']
    size = len(parts[0])
    while size < target_chars:
        cx, cy, r = rng.uniform(50, 1950), rng.uniform(50, 950), rng.uniform(5, 40)
        pts = " L".join(f"{cx + r * rng.uniform(0.7, 1.3) * math.cos(a):.2f},"
                        f"{cy + r * rng.uniform(0.7, 1.3) * math.sin(a):.2f}"
                        for a in (2 * math.pi * k / 80 for k in range(80)))
        part = f'<path d="M{pts} Z" fill="#{rng.randrange(0x1000000):06x}" stroke="#333" stroke-width="0.5"/>'
        parts.append(part)
        size += len(part)
    return "".join(parts) + "</svg>"


def test_large_svg_passes_and_bombs_of_that_size_stay_contained():
    svg = SvgRenderer()
    try:
        big = world_map_svg()
        assert len(big) > 1_150_000 > RenderConfig().chart.max_code_chars
        result = svg.render(big)
        assert result.ok, result.detail
        assert len(np.unique(result.image.reshape(-1, 3), axis=0)) > 50
        padding = "<!--" + "x" * 1_200_000 + "-->"
        ns = 'xmlns="http://www.w3.org/2000/svg"'
        canvas_bomb = f'<svg {ns} width="100000000" height="100000000">{padding}<rect width="50000000" ' \
                      'height="50000000" fill="blue"/></svg>'
        bombed = svg.render(canvas_bomb)
        assert bombed.ok and bombed.timings["total_s"] < 5.0
        laughs = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
                  '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
                  f'<svg {ns}>{padding}<text>&d;</text></svg>')
        assert svg.render(laughs).failure == F.SANDBOX_VIOLATION
        over = svg.render(big + "<!--" + "y" * 4_000_000 + "-->")
        assert over.failure == F.OUTPUT_TOO_LARGE and "render.svg.max_code_chars" in over.detail
    finally:
        svg.close()


def test_size_limits_are_per_kind_from_config(chart):
    long_chart = "x = 1\n" * 40_000  # 240 k chars: over the chart limit, under the SVG one
    result = chart.render(long_chart)
    assert result.failure == F.OUTPUT_TOO_LARGE and "render.chart.max_code_chars" in result.detail
    cfg = RenderConfig()
    cfg.chart.max_code_chars = 300_000
    roomy = ChartRenderer(cfg)
    try:
        assert roomy.render(long_chart + "import matplotlib.pyplot as plt\nplt.plot([1, 2])").ok
    finally:
        roomy.close()


def test_benchmark_corpus_mode(tmp_path, capsys):
    """`benchmarks/render.py --corpus DIR`: every file rendered by kind, compared with the plain way."""
    import json

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "line.py").write_text(P + "plt.plot([1, 3, 2])\nplt.title('corpus')\nplt.savefig('x.png', dpi=200)\n")
    (corpus / "sub" / "dot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
                                            '<circle cx="10" cy="10" r="8" fill="teal"/></svg>')
    (corpus / "t.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    (corpus / "bad.py").write_text("1 / 0\n")
    (corpus / "notes.txt").write_text("ignored")
    out = tmp_path / "rows.json"
    _benchmark().run_corpus(str(corpus), str(out), None)
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())}
    assert set(rows) == {"line.py", "dot.svg", "t.md", "bad.py"}
    assert rows["bad.py"]["failure"] == "runtime_error"
    for name in ("line.py", "dot.svg", "t.md"):
        assert rows[name]["ok"] and rows[name]["mean_abs_diff"] < 4.0, rows[name]
    printed = capsys.readouterr().out
    assert "chart" in printed and "50.0%" in printed and "runtime_error 1" in printed
