"""ChartMimic-style trace metrics on trusted, hand-written matplotlib code (run in-process here; in
production the tracer runs inside the render sandbox)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from pipeline.render.trace import ChartTracer, chart_trace_metrics, trace_figure  # noqa: E402

BASE = """import matplotlib.pyplot as plt
fig, ax = plt.subplots({grid})
a = ax if {single} else ax[0]
a.{call}([1, 2, 3], [3, 1, 2], color={color!r})
a.set_title({title!r})
a.set_xlabel('B')
for x in (fig.axes):
    x.set_xticks([]); x.set_yticks([])
"""


def trace(call="bar", color="#ff0000", title="A", grid="", single=True):
    plt.close("all")
    with ChartTracer() as t:
        exec(BASE.format(call=call, color=color, title=title, grid=grid, single=single), {})
    return trace_figure(plt.gcf(), t.calls)


def test_identical_code_scores_one_everywhere():
    ref = trace()
    assert sorted(ref["texts"]) == ["A", "B"] and ref["types"] == ["bar"] and ref["layout"] == [[1, 1, 0, 0]]
    assert chart_trace_metrics(trace(), ref) == {"text_f1": 1.0, "layout_f1": 1.0, "type_f1": 1.0, "color_f1": 1.0}


def test_each_metric_sees_its_own_difference():
    ref = trace()
    assert chart_trace_metrics(trace(title="C"), ref)["text_f1"] == pytest.approx(0.5)  # {C,B} vs {A,B}
    m = chart_trace_metrics(trace(call="plot"), ref)
    assert m["type_f1"] == 0.0 and m["text_f1"] == 1.0
    assert chart_trace_metrics(trace(color="#0000ff"), ref)["color_f1"] == 0.0
    near = chart_trace_metrics(trace(color="#f00000"), ref)["color_f1"]  # distance 15/255 → similarity ≈0.88
    assert 0.85 < near < 0.9
    wide, tall = trace(grid="1, 2", single=False), trace(grid="2, 1", single=False)
    assert chart_trace_metrics(wide, tall)["layout_f1"] == 0.0


def test_nested_calls_count_once_and_patch_is_restored():
    from matplotlib.axes import Axes

    original = Axes.bar
    plt.close("all")
    with ChartTracer() as t:
        fig, ax = plt.subplots()
        ax.hist([1, 2, 2, 3, 3, 3])  # hist draws with bar() internally
    assert t.calls == ["hist"] and Axes.bar is original
    assert trace_figure(fig, t.calls)["types"] == ["hist"]
