"""ChartMimic-style low-level chart metrics: text, layout, chart type and colour F1.

Two halves, so the untrusted half can run where untrusted code runs:
  * `ChartTracer` (a context manager) records which plotting methods the code calls while it draws, and
    `trace_figure(fig, calls)` then reads the finished figure: visible texts, the subplot grid cells and the
    colours of drawn artists. Both run *inside* the render sandbox child, right after the snippet, and
    return plain JSON-able data.
  * `chart_trace_metrics(predicted_trace, reference_trace)` compares two traces anywhere (pure Python).
Nothing here imports pyplot at module import time.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# Plotting methods → the chart type they draw (ChartMimic counts types from the calls a script makes).
CHART_CALLS: dict[str, str] = {
    "bar": "bar", "barh": "bar", "bar_label": "", "plot": "line", "step": "line", "errorbar": "errorbar",
    "scatter": "scatter", "pie": "pie", "hist": "hist", "hist2d": "heatmap", "fill_between": "area",
    "fill_betweenx": "area", "stackplot": "area", "boxplot": "box", "violinplot": "violin", "imshow": "heatmap",
    "pcolormesh": "heatmap", "pcolor": "heatmap", "contour": "contour", "contourf": "contour", "quiver": "quiver",
    "hexbin": "hexbin", "stem": "stem", "polar": "line", "axhline": "", "axvline": "", "annotate": "",
    "text": "",
}


class ChartTracer:
    """Record plotting calls made on any Axes while active (patched on the class, restored on exit)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "ChartTracer":
        # matplotlib: only a process that draws charts traces them; validate_trace and the metrics need no matplotlib
        from matplotlib.axes import Axes

        for name in CHART_CALLS:
            original = getattr(Axes, name, None)
            if original is None:
                continue
            self._saved[name] = original

            def wrapper(ax, *args, _name=name, _original=original, **kwargs):
                # Only the outermost call counts: hist() calls bar() internally, boxplot() calls plot().
                depth = getattr(self, "_depth", 0)
                if depth == 0:
                    self.calls.append(_name)
                self._depth = depth + 1
                try:
                    return _original(ax, *args, **kwargs)
                finally:
                    self._depth = depth

            setattr(Axes, name, wrapper)
        return self

    def __exit__(self, *exc) -> None:
        # matplotlib: loaded already by whoever traces (see __enter__)
        from matplotlib.axes import Axes

        for name, original in self._saved.items():
            setattr(Axes, name, original)
        self._saved.clear()


def _hex(color: Any) -> str | None:
    # matplotlib: loaded already by whoever traces
    from matplotlib.colors import to_hex, to_rgba

    try:
        rgba = to_rgba(color)
    except (ValueError, TypeError):
        return None
    return None if rgba[3] == 0 else to_hex(rgba, keep_alpha=False)


def trace_figure(fig: Any, calls: list[str], draw: bool = True) -> dict[str, Any]:
    """Texts, layout cells, chart types and artist colours of a figure, as JSON-able lists. `draw=False`
    when the caller has just drawn it (the render child), so it is not drawn twice."""
    # matplotlib: loaded already by whoever traces
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    if draw:
        fig.canvas.draw()  # tick labels only exist after a draw
    texts: list[str] = []
    colors: list[str] = []
    layout: list[list[int]] = []
    for t in fig.findobj(Text):
        s = t.get_text().strip()
        if s and t.get_visible():
            texts.append(s)
    for ax in fig.axes:
        spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
        if spec is not None:
            rows, cols, start, stop = spec.get_geometry()
            layout.append([int(rows), int(cols), int(start), int(stop)])
        else:  # an axes placed by hand (colorbar, inset): record it as its own cell
            layout.append([0, 0, 0, 0])
        for artist in ax.get_children():
            if not artist.get_visible() or artist is ax.patch:
                continue
            if isinstance(artist, Line2D) and len(artist.get_xdata()) > 0:
                colors.append(_hex(artist.get_color()))
            elif isinstance(artist, Patch):  # bars, wedges, filled polygons; spines are unfilled → skipped
                colors.append(_hex(artist.get_facecolor()))
            elif isinstance(artist, Collection):
                for fc in artist.get_facecolors()[:50]:
                    colors.append(_hex(fc))
            elif isinstance(artist, AxesImage):
                colors.append(f"cmap:{artist.get_cmap().name}")
    types = [CHART_CALLS[c] for c in calls if CHART_CALLS.get(c)]
    return {"texts": texts, "layout": layout, "types": types, "colors": [c for c in colors if c]}


def trace_figures(figs: list[Any], calls: list[str], draw: bool = True) -> dict[str, Any]:
    """`trace_figure` over several figures (a script that output more than one): texts, layout cells and
    colours of all of them together; chart types once, from the calls."""
    merged: dict[str, Any] = {"texts": [], "layout": [], "types": [], "colors": []}
    for fig in figs:
        one = trace_figure(fig, [], draw=draw)
        for key in ("texts", "layout", "colors"):
            merged[key].extend(one[key])
    merged["types"] = [CHART_CALLS[c] for c in calls if CHART_CALLS.get(c)]
    return merged


# Bounds on a trace. It is computed next to untrusted code (in the render sandbox child), so whoever reads it
# back validates it against these; they also keep the child's reply frame well under its 1 MiB header cap.
TRACE_MAX_ITEMS = {"texts": 256, "layout": 256, "types": 256, "colors": 1024}
TRACE_MAX_TEXT_CHARS = 160
TRACE_MAX_GRID = 10_000  # rows / cols / cell index of one subplot spec
TRACE_KEYS = ("texts", "layout", "types", "colors")  # the keys of every trace (pipeline/metrics reads them here)
CHART_TYPES = frozenset(t for t in CHART_CALLS.values() if t)
_HEX_COLOR = re.compile(r"#[0-9a-f]{6}")
_CMAP_COLOR = re.compile(r"cmap:[A-Za-z0-9_.+\-]{1,64}")


class InvalidTrace(ValueError):
    """A trace that is not what `trace_figure` produces (wrong keys, types, sizes): forged or corrupted."""


def bound_trace(trace: dict[str, Any]) -> dict[str, Any]:
    """Clip an honest trace to the bounds, keeping it valid: long texts cut, long lists truncated, colour-map
    names reduced to safe characters, out-of-range layout numbers clamped."""
    def cmap_safe(color: str) -> str:
        if not color.startswith("cmap:"):
            return color
        name = re.sub(r"[^A-Za-z0-9_.+\-]", "_", color[5:])[:64]
        return f"cmap:{name or '_'}"

    colors = [cmap_safe(str(c)) for c in trace["colors"]]
    return {
        "texts": [str(t)[:TRACE_MAX_TEXT_CHARS] for t in trace["texts"][: TRACE_MAX_ITEMS["texts"]]],
        "layout": [[min(max(int(v), 0), TRACE_MAX_GRID) for v in cell]
                   for cell in trace["layout"][: TRACE_MAX_ITEMS["layout"]]],
        "types": [t for t in trace["types"] if t in CHART_TYPES][: TRACE_MAX_ITEMS["types"]],
        "colors": [c for c in colors if _HEX_COLOR.fullmatch(c) or _CMAP_COLOR.fullmatch(c)]
        [: TRACE_MAX_ITEMS["colors"]],
    }


def validate_trace(trace: Any) -> dict[str, Any]:
    """Return `trace` as a fresh, plain dict if it has exactly the shape `bound_trace` produces; else raise
    InvalidTrace. Nothing is coerced: an untrusted trace is either well-formed or rejected."""
    if type(trace) is not dict or set(trace) != set(TRACE_KEYS):
        raise InvalidTrace(f"expected keys {list(TRACE_KEYS)}")
    for key in TRACE_KEYS:
        if type(trace[key]) is not list or len(trace[key]) > TRACE_MAX_ITEMS[key]:
            raise InvalidTrace(f"{key}: not a list of at most {TRACE_MAX_ITEMS[key]} items")
    if not all(type(t) is str and len(t) <= TRACE_MAX_TEXT_CHARS for t in trace["texts"]):
        raise InvalidTrace(f"texts: every item must be a string of at most {TRACE_MAX_TEXT_CHARS} chars")
    if not all(type(cell) is list and len(cell) == 4
               and all(type(v) is int and 0 <= v <= TRACE_MAX_GRID for v in cell)
               for cell in trace["layout"]):
        raise InvalidTrace("layout: every cell must be 4 small non-negative ints")
    if not all(type(t) is str and t in CHART_TYPES for t in trace["types"]):
        raise InvalidTrace("types: unknown chart type")
    if not all(type(c) is str and (_HEX_COLOR.fullmatch(c) or _CMAP_COLOR.fullmatch(c))
               for c in trace["colors"]):
        raise InvalidTrace("colors: every item must be #rrggbb or cmap:<name>")
    return {"texts": list(trace["texts"]), "layout": [list(c) for c in trace["layout"]],
            "types": list(trace["types"]), "colors": list(trace["colors"])}


def _f1(common: float, n_pred: int, n_ref: int) -> float:
    if n_pred == 0 and n_ref == 0:
        return 1.0
    if n_pred == 0 or n_ref == 0 or common == 0:
        return 0.0
    p, r = common / n_pred, common / n_ref
    return 2 * p * r / (p + r)


def _multiset_f1(pred: list, ref: list) -> float:
    common = sum((Counter(map(str, pred)) & Counter(map(str, ref))).values())
    return _f1(common, len(pred), len(ref))


def _color_similarity(a: str, b: str) -> float:
    """1 for equal colours, falling linearly to 0 at RGB distance ≥ 0.5 (in [0,1] units). Colour-map names
    match only exactly."""
    if a.startswith("cmap:") or b.startswith("cmap:"):
        return float(a == b)
    ra = [int(a[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    rb = [int(b[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    d = sum((x - y) ** 2 for x, y in zip(ra, rb)) ** 0.5
    return max(0.0, 1.0 - d / 0.5)


def _color_f1(pred: list[str], ref: list[str]) -> float:
    """Soft F1 over distinct colours: one-to-one assignment maximising summed colour similarity."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    p, r = sorted(set(pred)), sorted(set(ref))
    if not p or not r:
        return _f1(0, len(p), len(r))
    sim = np.array([[_color_similarity(a, b) for b in r] for a in p])
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return _f1(float(sim[rows, cols].sum()), len(p), len(r))


def chart_trace_metrics(predicted: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    return {
        "text_f1": _multiset_f1(predicted["texts"], reference["texts"]),
        "layout_f1": _multiset_f1([tuple(x) for x in predicted["layout"]], [tuple(x) for x in reference["layout"]]),
        "type_f1": _multiset_f1(predicted["types"], reference["types"]),
        "color_f1": _color_f1(predicted["colors"], reference["colors"]),
    }
