"""The figure model of a matplotlib program: what the chart draws, as plain data for the differ.

A `Figure` has the style sheet, the subplot layout, the figure-level calls (suptitle, figure text, colour
bars) and one `Panel` per axes; a panel has its data `Series` (bars, lines, scatter, areas, histogram, pie,
boxes, heatmaps, reference lines) and its other calls by method name (titles, axis labels, tick labels,
legend, grid, annotations, limits...). Every part keeps the `Call` it came from: one plotting call as the
interpreter (`chart_interpreter.py`) recorded it, arguments resolved, a value it could not know being
`UNKNOWN`. `assemble` turns the recorded calls into the model; nothing here reads program text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Unknown:
    """A value the interpreter cannot know; every operation on it is unknown too."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


@dataclass
class Call:
    """One plotting call, its arguments resolved to values (UNKNOWN where they could not be known)."""

    panel: int  # -1: the figure
    method: str  # axes method name ('set_title' also for plt.title); 'artist.<name>' for artist methods
    args: list
    kwargs: dict
    receiver: str  # the receiver's source text ('ax1', 'plt', 'fig')
    in_loop: bool


# ----------------------------------------------------------------------------------------------- values
def is_number(v) -> bool:
    """An int or a float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_str_list(v) -> bool:
    """A non-empty list or tuple of strings (category labels)."""
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, str) for x in v)


def as_numbers(v) -> list | None:
    """v as a list of numbers (lists of numbers stay the same object, for provenance), else None."""
    if is_number(v):
        return [v]
    if isinstance(v, (list, tuple)) and v and all(is_number(x) for x in v):
        return v if isinstance(v, list) else list(v)
    return None


def as_matrix(v) -> list | None:
    """v itself when it is a non-empty list of non-empty lists of numbers (box groups, heatmap rows)."""
    if isinstance(v, list) and v and all(isinstance(r, list) and r and all(is_number(x) for x in r)
                                         for r in v):
        return v
    return None


# -------------------------------------------------------------------------------------------- the model
_SERIES_KINDS = {"bar", "barh", "plot", "scatter", "step", "errorbar", "stem", "fill_between", "fill_betweenx",
                 "stackplot", "hist", "pie", "boxplot", "violinplot", "imshow", "pcolormesh", "pcolor", "matshow",
                 "contour", "contourf", "hexbin", "axvline", "axhline"}
_FAMILY = {"bar": "bar", "barh": "bar", "plot": "xy", "scatter": "xy", "step": "xy", "errorbar": "xy", "stem": "xy",
           "fill_between": "area", "fill_betweenx": "area", "stackplot": "area", "boxplot": "box", "violinplot": "box",
           "imshow": "grid", "pcolormesh": "grid", "pcolor": "grid", "matshow": "grid", "axvline": "refline",
           "axhline": "refline"}
# matplotlib's short keyword names → the long ones
ALIASES = {"c": "color", "ls": "linestyle", "lw": "linewidth", "ec": "edgecolor", "fc": "facecolor",
           "ms": "markersize", "mfc": "markerfacecolor"}
_FMT_MARKERS = set(".,ov^<>1234sp*hH+xXDd|_8P")
_FMT_COLORS = {"b": "blue", "g": "green", "r": "red", "c": "cyan", "m": "magenta", "y": "yellow", "k": "black",
               "w": "white"}


@dataclass
class Series:
    """One data series drawn on a panel (a stackplot call gives one per stacked array)."""

    call: Call
    kind: str
    index: int  # order in its panel
    arrays: dict[str, Any]  # role → numeric list, or list of numeric lists (box groups, heatmap rows)
    cats: list | None  # category labels carried by the data (bar x, barh y, plot x strings)
    cat_axis: str
    label: str | None
    style: dict[str, Any]

    @property
    def family(self) -> str:
        return _FAMILY.get(self.kind, self.kind)

    @property
    def primary(self) -> list:
        """The values that identify the series (heights, ys, shares...), flattened."""
        for role in ("y", "y1", "shares", "samples", "groups", "matrix", "x"):
            if role in self.arrays:
                v = self.arrays[role]
                rows = as_matrix(v)
                return [x for row in rows for x in row] if rows else list(as_numbers(v) or [])
        return []


@dataclass
class Panel:
    """One axes: its series in drawing order, and its other calls by method name."""

    index: int
    receiver: str = ""
    series: list[Series] = field(default_factory=list)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def last(self, method: str) -> Call | None:
        calls = self.calls.get(method)
        return calls[-1] if calls else None

    def all(self, method: str) -> list[Call]:
        return self.calls.get(method, [])


@dataclass
class Figure:
    """The whole chart: style sheet, subplot layout (rows, columns), panels, figure-level calls by method."""

    style: str
    layout: tuple[int, int]
    panels: list[Panel]
    figure_calls: dict[str, list[Call]]
    origins: dict[int, tuple[str, str]]  # id(data list) → (variable, series or 'row k'): the differ's names
    keep: Any = None  # the interpreter, keeping the provenance objects alive


# ------------------------------------------------------------------------------------------ assembling
def _parse_fmt(fmt: str) -> dict:
    """A plot format string ('r--o') as style keywords."""
    out: dict = {}
    rest = fmt
    for ls in ("--", "-.", "-", ":"):
        if ls in rest:
            out["linestyle"] = ls
            rest = rest.replace(ls, "", 1)
            break
    for ch in rest:
        if ch in _FMT_COLORS:
            out["color"] = _FMT_COLORS[ch]
        elif ch in _FMT_MARKERS:
            out["marker"] = ch
    return out


def _series_from(call: Call, index: int) -> list[Series]:
    """The series a plotting call draws, its data by role and its style keywords (aliases resolved)."""
    kind, args = call.method, list(call.args)
    kw = {ALIASES.get(k, k): v for k, v in call.kwargs.items()}
    arrays: dict[str, Any] = {}
    cats, cat_axis = None, "x"
    label = kw.get("label") if isinstance(kw.get("label"), str) else None
    if label is not None and label.startswith("_"):
        label = None
    if kind in ("plot", "step", "errorbar", "stem") and args:
        fmt = [a for a in args if isinstance(a, str)]
        data = [a for a in args if not isinstance(a, str)]
        if fmt and kind == "plot":
            for k, v in _parse_fmt(fmt[0]).items():
                kw.setdefault(k, v)
        if data and is_str_list(data[0]):
            cats = list(data[0])
            if len(data) > 1:
                arrays["y"] = data[1]
        elif len(data) == 1:
            arrays["y"] = data[0]
        elif len(data) >= 2:
            arrays["x"], arrays["y"] = data[0], data[1]
    elif kind in ("bar", "barh"):
        pos = args[0] if args else kw.get("x" if kind == "bar" else "y")
        size = args[1] if len(args) > 1 else kw.get("height" if kind == "bar" else "width")
        cat_axis = "x" if kind == "bar" else "y"
        if is_str_list(pos):
            cats = list(pos)
        else:
            arrays["x"] = pos  # bar positions: not compared, they only place the categories
        arrays["y"] = size
        if len(args) > 2:
            kw.setdefault("width" if kind == "bar" else "height", args[2])
    elif kind == "scatter":
        if len(args) >= 2:
            if is_str_list(args[0]):
                cats, arrays["y"] = list(args[0]), args[1]
            else:
                arrays["x"], arrays["y"] = args[0], args[1]
        if len(args) > 2:
            kw.setdefault("s", args[2])
    elif kind in ("fill_between", "fill_betweenx"):
        for role, v in zip(("x", "y1", "y2"), args):
            arrays[role] = v
    elif kind == "stackplot" and len(args) >= 2:
        labels = kw.get("labels") if isinstance(kw.get("labels"), (list, tuple)) else []
        colors = kw.get("colors") if isinstance(kw.get("colors"), (list, tuple)) else []
        out = []
        for k, y in enumerate(args[1:]):
            style = {key: v for key, v in kw.items() if key not in ("labels", "colors")}
            if k < len(colors):
                style["color"] = colors[k]
            lab = labels[k] if k < len(labels) and isinstance(labels[k], str) else None
            x_cats = list(args[0]) if is_str_list(args[0]) else None
            arr = {"y": y} if x_cats else {"x": args[0], "y": y}
            out.append(Series(call, kind, index + k, arr, x_cats, "x", lab, style))
        return out
    elif kind == "hist" and args:
        arrays["samples"] = args[0]
        if len(args) > 1:
            kw.setdefault("bins", args[1])
    elif kind == "pie" and args:
        arrays["shares"] = args[0]
        if is_str_list(kw.get("labels")):
            cats = list(kw["labels"])
    elif kind in ("boxplot", "violinplot") and args:
        arrays["groups"] = args[0]
        if is_str_list(kw.get("labels")) or is_str_list(kw.get("tick_labels")):
            cats = list(kw.get("labels") or kw.get("tick_labels"))
    elif kind in ("imshow", "pcolormesh", "pcolor", "matshow", "contour", "contourf", "hexbin") and args:
        arrays["matrix"] = args[-1] if kind != "hexbin" else args[0]
        cat_axis = "y"
    elif kind in ("axvline", "axhline"):
        arrays["x" if kind == "axvline" else "y"] = args[0] if args else kw.get("x" if kind == "axvline" else "y", 0)
    style = {k: v for k, v in kw.items() if k not in ("label", "labels", "x", "y", "height", "tick_labels")}
    return [Series(call, kind, index, arrays, cats, cat_axis, label, style)]


def assemble(calls: list[Call], n_axes: int, layout: tuple[int, int] | None, style: str,
             origins: dict[int, tuple[str, str]], keep: Any = None) -> Figure:
    """The figure model of the recorded calls on `n_axes` axes (at least one panel; a call on an axes out of
    range goes to the first): series calls become the panels' series; figure calls and colour bars are kept
    apart. `origins` names the data lists (id → variable, series); `keep` keeps those lists alive."""
    n_panels = max(1, n_axes)
    panels = [Panel(k) for k in range(n_panels)]
    figure_calls: dict[str, list[Call]] = {}
    for call in calls:
        if call.panel < 0 or call.method == "colorbar":
            figure_calls.setdefault(call.method, []).append(call)
            continue
        panel = panels[call.panel] if 0 <= call.panel < n_panels else panels[0]
        if not panel.receiver and call.receiver:
            panel.receiver = call.receiver
        if call.method in _SERIES_KINDS:
            panel.series += _series_from(call, len(panel.series))
        else:
            panel.calls.setdefault(call.method, []).append(call)
    layout = layout or (1, n_panels)
    return Figure(style, layout, panels, figure_calls, origins, keep)
