"""ChartMimic-style tracing inside the sandboxed chart child: the trace of a known chart, zero cost when not
asked, and a hostile snippet that tampers with the tracer (or forges its output) can neither crash the child
nor get an unvalidated trace through the zygote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.render.trace import (
    TRACE_MAX_ITEMS,
    TRACE_MAX_TEXT_CHARS,
    InvalidTrace,
    bound_trace,
    chart_trace_metrics,
    validate_trace,
)
from pipeline.render import RenderFailure, render
from pipeline.render.forkserver import ChartRenderer
from pipeline.render.zygote import _validate_child_reply

REPO = Path(__file__).resolve().parent.parent
BAR_CHART = (Path(__file__).resolve().parent / "render_cases" / "bar_chart.py").read_text()
LINE = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2], color='#00ff00')\nplt.title('ok')\n"


@pytest.fixture(scope="module")
def chart():
    r = ChartRenderer()
    yield r
    r.close()


def test_trace_of_known_bar_chart(chart):
    traced = chart.render(BAR_CHART, trace=True)
    assert traced.ok, traced.detail
    trace = traced.trace
    assert {"Quarterly sales", "Sales (k$)", "Q1", "Q2", "Q3", "Q4", "2023", "2024"} <= set(trace["texts"])
    assert trace["types"] == ["bar", "bar"]
    assert trace["layout"] == [[1, 1, 0, 0]]
    assert set(trace["colors"]) == {"#4c72b0", "#dd8452"} and len(trace["colors"]) == 8  # 2 series × 4 bars
    assert json.loads(json.dumps(trace)) == trace  # plain JSON, as it crossed the pipes
    assert chart_trace_metrics(trace, trace) == {"text_f1": 1.0, "layout_f1": 1.0, "type_f1": 1.0, "color_f1": 1.0}

    plain = chart.render(BAR_CHART)
    assert plain.ok and plain.trace is None
    assert np.array_equal(plain.image, traced.image), "tracing changed the pixels"
    assert "trace_s" in traced.timings and "trace_s" not in plain.timings  # trace=False runs no tracer


def test_trace_is_none_when_not_a_chart_or_failed():
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="5" height="5"/></svg>'
    assert render("svg", svg, trace=True).trace is None
    failed = render("chart", "import matplotlib.pyplot as plt\nplt.plot([1])\n1/0", trace=True)
    assert failed.failure == RenderFailure.RUNTIME_ERROR and failed.trace is None
    two = render("chart", "import matplotlib.pyplot as plt\nplt.figure(); plt.bar([1], [2]); plt.title('a')\n"
                 "plt.figure(); plt.pie([1, 2]); plt.title('b')\n", trace=True)
    # The trace is of the captured figure (the current one: texts of "b" only); chart types count every
    # plotting call the script made, as ChartMimic counts them.
    assert two.ok and two.trace["types"] == ["bar", "pie"] and "b" in two.trace["texts"]
    assert "a" not in two.trace["texts"]


# Snippets that attack the tracer from inside the child. Each must come back with trace=None and a reason, or
# with a trace that passed validation (or, if it broke drawing too, as its own runtime error); never crash.
TAMPERING = {
    "deletes the traced methods": LINE + "from matplotlib.axes import Axes\ndel Axes.plot\ndel Axes.bar\n",
    "replaces the traced methods": LINE + "from matplotlib.axes import Axes\nAxes.bar = 42\nAxes.plot = None\n",
    "get_text returns a non-string": LINE + "import matplotlib.text\nmatplotlib.text.Text.get_text = lambda s: 7\n",
    "findobj returns huge texts": LINE + "import matplotlib.figure\nclass Fake:\n"
                                  "    def get_text(self): return 'x' * 10_000_000\n"
                                  "    def get_visible(self): return True\n"
                                  "matplotlib.figure.Figure.findobj = lambda self, *a, **k: [Fake()] * 100_000\n",
    "visibility raises SystemExit": LINE + "import matplotlib.artist\n"
                                    "def boom(self): raise SystemExit(3)\n"
                                    "matplotlib.artist.Artist.get_visible = boom\n",
    "forges an invalid trace": LINE + "import pipeline.render.trace as ct\n"
                               "ct.bound_trace = lambda t: {'texts': [1, 2], 'layout': 'x', 'types': ['rm -rf'],"
                               " 'colors': ['#zzzzzz'], 'escape': True}\n",
    "forges a non-dict trace": LINE + "import pipeline.render.trace as ct\n"
                               "ct.trace_figures = lambda *a, **k: None\nct.bound_trace = lambda t: [t]\n",
    "forges an error report": LINE + "import pipeline.render.trace as ct\n"
                              "ct.bound_trace = lambda t: {'error': {'nested': [1] * 10}}\n",
    "removes the tracer module": LINE + "import sys\nsys.modules.pop('pipeline.render.trace', None)\n"
                                 "sys.modules['pipeline.render.trace'] = None\n",
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_with_the_tracer_is_contained(chart, name):
    result = chart.render(TAMPERING[name], trace=True)
    # Breaking matplotlib can also break the drawing itself: that is the snippet's own runtime error.
    assert result.ok or result.failure == RenderFailure.RUNTIME_ERROR, (name, result.failure, result.detail)
    if not result.ok:
        assert result.trace is None
    elif result.trace is None:
        assert result.detail.startswith(("no trace", "trace rejected")), (name, result.detail)
    else:
        assert validate_trace(result.trace) == result.trace
        assert all(len(t) <= TRACE_MAX_TEXT_CHARS for t in result.trace["texts"])
    if name.startswith("forges"):  # only the zygote's validation stands between these and the caller
        assert result.ok and result.trace is None, (name, result.trace)
    assert chart.render(LINE, trace=True).trace["types"] == ["line"], "the next snippet must trace normally"


def test_oversized_forged_trace_is_a_typed_failure_and_the_pool_serves_on(chart):
    # A reply frame over the header cap: the zygote rejects the whole result, it does not parse it.
    huge = LINE + ("import pipeline.render.trace as ct\n"
                   "ct.bound_trace = lambda t: {'texts': ['x' * 1000] * 5000, 'layout': [], 'types': [], 'colors': []}\n")
    result = chart.render(huge, trace=True)
    assert result.failure == RenderFailure.SANDBOX_VIOLATION and result.trace is None
    assert chart.render(BAR_CHART, trace=True).trace["types"] == ["bar", "bar"]


GOOD = {"texts": ["a"], "layout": [[1, 1, 0, 0]], "types": ["bar"], "colors": ["#ff0000", "cmap:viridis"]}


@pytest.mark.parametrize("forged", [
    None, [], "trace", {**GOOD, "extra": 1}, {k: v for k, v in GOOD.items() if k != "colors"},
    {**GOOD, "texts": [1]}, {**GOOD, "texts": ["x" * (TRACE_MAX_TEXT_CHARS + 1)]},
    {**GOOD, "texts": ["a"] * (TRACE_MAX_ITEMS["texts"] + 1)}, {**GOOD, "layout": [[1, 1, 0]]},
    {**GOOD, "layout": [[True, 1, 0, 0]]}, {**GOOD, "layout": [[-1, 1, 0, 0]]}, {**GOOD, "layout": [[1.0, 1, 0, 0]]},
    {**GOOD, "types": ["bar; rm -rf /"]}, {**GOOD, "colors": ["red"]}, {**GOOD, "colors": ["cmap:a b"]},
    {**GOOD, "colors": [["#ff0000"]]}, {**GOOD, "texts": {"a": 1}},
])
def test_zygote_rejects_malformed_traces(forged):
    reply = _validate_child_reply({"ok": True, "nbytes": 12, "trace": forged}, expected=12, want_trace=True)
    assert reply["ok"] is True and reply["trace"] is None and reply["detail"].startswith(("no trace", "trace rejected"))
    with pytest.raises(InvalidTrace):
        validate_trace(forged)


def test_zygote_passes_valid_traces_and_drops_unasked_ones():
    reply = _validate_child_reply({"ok": True, "nbytes": 12, "trace": GOOD}, expected=12, want_trace=True)
    assert reply["trace"] == GOOD and reply["trace"] is not GOOD and reply["detail"] == ""
    unasked = _validate_child_reply({"ok": True, "nbytes": 12, "trace": GOOD}, expected=12, want_trace=False)
    assert unasked["trace"] is None


def test_bound_trace_keeps_honest_traces_valid():
    raw = {"texts": ["y" * 500] * 1000, "layout": [[1, 2, 0, 99_999]], "types": ["bar", "", "line"],
           "colors": ["#00ff00", "cmap:my map/with spaces", "cmap:" + "c" * 200]}
    bounded = bound_trace(raw)
    assert validate_trace(bounded) == bounded
    assert len(bounded["texts"]) == TRACE_MAX_ITEMS["texts"] and bounded["types"] == ["bar", "line"]
    assert bounded["colors"][1] == "cmap:my_map_with_spaces" and len(bounded["colors"][2]) == 5 + 64


def test_cli_writes_the_trace(tmp_path):
    out, trace_path = tmp_path / "bar.png", tmp_path / "bar.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline.render", "chart", "tests/render_cases/bar_chart.py",
                           "-o", str(out), "--trace", str(trace_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(trace_path.read_text())
    assert "Quarterly sales" in written["trace"]["texts"] and written["trace"]["types"] == ["bar", "bar"]
    svg = subprocess.run([sys.executable, "-m", "pipeline.render", "svg", "tests/render_cases/icon.svg", "-o",
                          str(tmp_path / "i.png"), "--trace", str(tmp_path / "i.json")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert svg.returncode == 2 and "only available for charts" in svg.stderr


def _forge_reply(header: str) -> str:
    """A snippet that writes its own reply frame to every fd it can (the result pipe among them) and draws
    nothing: the zygote reads the forged frame first."""
    return ("import os, json, struct\n"
            f"head = json.dumps({header}).encode()\n"
            "for fd in range(3, 64):\n"
            "    try: os.write(fd, struct.pack('!II', len(head), 0) + head)\n"
            "    except OSError: pass\n")


def test_forged_ok_reply_gets_a_blank_image_not_the_previous_render(chart):
    size = (200, 100)
    reference = chart.render(BAR_CHART, size=size)
    assert reference.ok
    forged_trace = {"texts": ["Quarterly sales"], "layout": [[1, 1, 0, 0]], "types": ["bar"], "colors": ["#4c72b0"]}
    forged = chart.render(_forge_reply(f'{{"ok": True, "nbytes": {200 * 100 * 3}, "trace": {forged_trace!r}}}'),
                          size=size, trace=True)
    assert forged.failure == RenderFailure.BLANK_IMAGE and forged.trace is None


def test_forged_reply_with_unparseable_timings_does_not_kill_the_zygote(chart):
    pid = chart.zygote_pid
    result = chart.render(_forge_reply('{"ok": False, "failure": "runtime_error", "timings": {"t": 10 ** 400}}'))
    assert result.failure == RenderFailure.SANDBOX_VIOLATION, (result.failure, result.detail)
    assert chart.zygote_pid == pid and chart.render(LINE).ok
