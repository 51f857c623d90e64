"""The chart differ: compares two figure models and lists the candidate's discrepancies.

The two models (`chart_figure.Figure`) are diffed part by part: figure style, subplot layout and figure
texts; then per panel the titles and axis labels, the category labels (renamed, dropped, added), the series
(paired per panel by kind, label and data, a missing series or data point being one error, then values,
labels, colours and keywords compared), the legend, grid, annotations, free text and axes details. Each
finding has a category, a severity, a location and a description, worded and graded as the edit engine's
(`pipeline/data/edits/chart.py`): "title of the first subplot", "data point 3 of 'values'", "legend entry
'Costs'", "blue elements".
"""

from __future__ import annotations

import difflib
from typing import Any

from pipeline.critic.structural.base import Findings, align, dice, is_typo
from pipeline.critic.structural.chart_figure import (
    ALIASES,
    UNKNOWN,
    Call,
    Figure,
    Panel,
    Series,
    as_matrix,
    as_numbers,
    is_number,
    is_str_list,
)
from pipeline.data.edits.base import scale_severity
from pipeline.data.vocab import COLOR_NAME

TASK = "chart"

# series kind → the word for it in descriptions ("the bar series is drawn as a line chart instead")
_KIND_WORD = {"bar": "bar", "barh": "horizontal bar", "plot": "line", "scatter": "scatter", "step": "step line",
              "fill_between": "area", "stackplot": "stacked area", "hist": "histogram", "pie": "pie",
              "boxplot": "box", "violinplot": "violin", "imshow": "heatmap", "pcolormesh": "heatmap"}

# series keyword → (category, severity, what, default), worded as the edit engine's keyword edits
_KEYWORDS: dict[str, tuple[str, int, str, Any]] = {
    "marker": ("style", 1, "marker shape", None), "linestyle": ("style", 1, "line style", "-"),
    "linewidth": ("style", 1, "line width", None), "alpha": ("style", 1, "transparency (alpha)", 1.0),
    "cmap": ("style", 2, "colour map", "viridis"), "edgecolor": ("style", 1, "edge colour", None),
    "hatch": ("style", 1, "hatch pattern", None), "width": ("style", 1, "bar width", 0.8),
    "height": ("style", 1, "bar width", 0.8), "s": ("style", 1, "marker size", None),
    "markersize": ("style", 1, "marker size", None), "bins": ("data", 2, "histogram bins", 10),
    "startangle": ("style", 1, "start angle", 0), "explode": ("structure", 1, "pulled-out wedge", None),
    "autopct": ("text", 1, "percentage labels", None), "wedgeprops": ("structure", 2, "wedge shape", None),
    "vmin": ("style", 1, "colour scale minimum", None), "vmax": ("style", 1, "colour scale maximum", None),
    "widths": ("style", 1, "box width", None), "shadow": ("style", 1, "shadow", False),
}


# ------------------------------------------------------------------------------------------------ naming
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]


def _where(receiver: str, panel: int, n_panels: int) -> str:
    """The edit engine's name for the axes a call draws on (ax1 → 'first subplot', fig/plt → 'figure')."""
    known = {"ax1": "first subplot", "ax2": "second subplot", "fig": "figure", "plt": "figure"}
    if receiver in known:
        return known[receiver]
    if n_panels > 1 and 0 <= panel < len(_ORDINALS):
        return f"{_ORDINALS[panel]} subplot"
    return "chart"


def _color_name(value) -> str:
    return COLOR_NAME.get(str(value).lower(), str(value))


def _norm_color(value) -> str | None:
    """A colour as comparable text: its hex code when matplotlib knows it, else the lowered name."""
    if not isinstance(value, str):
        return None if value is None else str(value)
    v = value.strip().lower()
    try:
        # matplotlib is a heavy optional dependency: only its colour parser, and only when a colour is compared
        from matplotlib.colors import to_hex

        return to_hex(v)
    except (ImportError, ValueError):
        return v


def _show(v) -> str:
    return "the default" if v is None else repr(v) if isinstance(v, str) else str(v)


def _same(a, b) -> bool:
    if is_number(a) and is_number(b):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------------------- diff
def diff_figures(ref: Figure, cand: Figure) -> list[dict]:
    """The discrepancies of the candidate figure against the reference one, as the answer's dicts."""
    return _Differ(ref, cand).run()


class _Differ:
    """One comparison: the reference and candidate figures, and the findings collected so far."""

    def __init__(self, ref: Figure, cand: Figure):
        self.ref, self.cand = ref, cand
        self.out = Findings(TASK)
        self.n_panels = len(ref.panels)

    def run(self) -> list[dict]:
        self._figure()
        for k, panel in enumerate(self.ref.panels):
            if k < len(self.cand.panels):
                self._panel(panel, self.cand.panels[k])
        return self.out.dicts()

    def where(self, call: Call | None, panel: Panel) -> str:
        receiver = call.receiver if call is not None and call.receiver else panel.receiver
        return _where(receiver, panel.index, self.n_panels)

    # ------------------------------------------------------------------------------- figure level
    def _figure(self) -> None:
        ref, cand, out = self.ref, self.cand, self.out
        if ref.style != cand.style:
            out.add("style", 2, "whole figure", f"The overall look (background, fonts, grid) follows the "
                                                f"'{cand.style}' style, not '{ref.style}'.")
        n_ref, n_cand = len(ref.panels), len(cand.panels)
        if n_ref == n_cand and n_ref > 1 and ref.layout != cand.layout:
            (r, c), (R, C) = cand.layout, ref.layout
            out.add("structure", 3, "subplot layout",
                    f"The panels are arranged in {r} row(s) × {c} column(s), not {R} × {C}.")
        for k in range(n_cand, n_ref):
            name = f"{_ORDINALS[k]} subplot" if k < len(_ORDINALS) else f"subplot {k + 1}"
            if any(ref.panels[k].series) or ref.panels[k].calls:
                out.add("structure", 3, name, f"The {name} is missing.")
        for k in range(n_ref, n_cand):
            if any(cand.panels[k].series):
                out.add("structure", 2, "extra subplot", "An extra subplot is drawn.")
        fake = Panel(-1, "fig")
        self._title(_last(ref.figure_calls, "suptitle"), _last(cand.figure_calls, "suptitle"), fake, "title")
        for method, what in (("supxlabel", "x-axis label"), ("supylabel", "y-axis label")):
            self._title(_last(ref.figure_calls, method), _last(cand.figure_calls, method), fake, what)
        self._texts(ref.figure_calls.get("text", []), cand.figure_calls.get("text", []), fake)

    # -------------------------------------------------------------------------------- panel level
    def _panel(self, rp: Panel, cp: Panel) -> None:
        self._title(rp.last("set_title"), cp.last("set_title"), rp, "title")
        for axis in "xy":
            self._title(rp.last(f"set_{axis}label"), cp.last(f"set_{axis}label"), rp, f"{axis}-axis label")
        drops = self._categories(rp, cp)
        self._series(rp, cp, drops)
        self._legend(rp, cp)
        self._grid(rp, cp)
        self._annotations(rp, cp)
        self._texts(rp.all("text"), cp.all("text"), rp)
        self._axes_details(rp, cp)
        self._artist_colors(rp, cp)

    def _title(self, old: Call | None, new: Call | None, panel: Panel, what: str) -> None:
        """Titles and axis labels: missing, extra, misspelled, different words, font size."""
        t_old = _text_arg(old)
        t_new = _text_arg(new)
        where = self.where(old if old is not None else new, panel)
        loc = f"{what} of the {where}"
        title = what == "title"
        if t_old and not t_new:
            self.out.add("text", 2 if title else 1, loc, f"The {what} is missing.")
        elif t_new and not t_old:
            self.out.add("text", 2 if title else 1, loc, f"An extra {what} '{t_new}' appears.")
        elif t_old and t_old != t_new:
            if is_typo(t_old, t_new):
                self.out.add("text", 1, loc, f"The {what} is misspelled: '{t_new}' instead of '{t_old}'.")
            else:
                self.out.add("text", 2, loc, f"The {what} reads '{t_new}' instead of '{t_old}'.")
        if t_old and t_new:
            self._fonts(old, new, panel)

    def _fonts(self, old: Call, new: Call, panel: Panel) -> None:
        where = self.where(old, panel)
        a, b = old.kwargs.get("fontsize", old.kwargs.get("size")), new.kwargs.get("fontsize", new.kwargs.get("size"))
        if not _same(a, b):
            self.out.add("style", 1, f"font size in the {where}", f"The font size is {_show(b)} instead of {_show(a)}.")
        a, b = old.kwargs.get("fontweight", "normal"), new.kwargs.get("fontweight", "normal")
        if a != b:
            self.out.add("style", 1, f"font weight in the {where}", f"The font weight is {_show(b)} instead of "
                                                                    f"{_show(a)}.")

    # ----------------------------------------------------------------------------------- categories
    def _category_lists(self, panel: Panel) -> dict[str, list]:
        out: dict[str, list] = {}
        for axis in "xy":
            call = panel.last(f"set_{axis}ticklabels")
            if call is not None and call.args and is_str_list(call.args[0]):
                out[axis] = call.args[0]
        for s in panel.series:
            if s.cats and s.cat_axis not in out:
                out[s.cat_axis] = s.cats
        return out

    def _categories(self, rp: Panel, cp: Panel) -> dict[str, tuple[list[int], list[int], int]]:
        """Category labels: renamed (text), dropped or added (data). Returns per reference axis the reference
        indices dropped, the candidate indices added and the candidate length, to align the data lists with."""
        ref_lists, cand_lists = self._category_lists(rp), self._category_lists(cp)
        if len(ref_lists) == len(cand_lists) == 1 and set(ref_lists) != set(cand_lists):
            cand_lists = {next(iter(ref_lists)): next(iter(cand_lists.values()))}  # bars turned on their side
        hint = self._dropped_by_data(rp, cp)
        result = {}
        for axis, old in ref_lists.items():
            new = cand_lists.get(axis)
            if new is None:
                continue
            old, new = list(old), list(new)
            dropped, added = [], []
            renamed: list[tuple[int, str, str]] = []
            # (the hint indexes the data lists, which may be longer than the labels: use it only when it fits)
            if hint and all(0 <= i < len(old) for i in hint) and len(old) - len(hint) == len(new):
                # the data says which points went: the labels left over in place may also be renamed
                kept = [i for i in range(len(old)) if i not in hint]
                dropped = list(hint)
                renamed = [(i, old[i], b) for i, b in zip(kept, new) if old[i] != b]
            else:
                for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
                    if op == "equal":
                        continue
                    k = min(i2 - i1, j2 - j1) if op == "replace" else 0
                    renamed += [(i1 + t, old[i1 + t], new[j1 + t]) for t in range(k)]
                    dropped += list(range(i1 + k, i2))
                    added += list(range(j1 + k, j2))
            if len(renamed) > 4:
                self.out.add("text", 2, f"category labels of the {self.where(None, rp)}",
                             f"The category labels read {', '.join(map(str, new))} instead of {', '.join(map(str, old))}.")
            else:
                for i, a, b in renamed:
                    self.out.add("text", 1 if is_typo(a, b) else 2, f"category label {i + 1} ('{a}')",
                                 f"The category label '{a}' reads '{b}'.")
            for i in dropped:
                what = f"'{old[i]}'"
                self.out.add("data", 3, f"data point {what}", f"The data point {what} is missing from the chart.",
                             key=("drop", rp.index, what))
            for j in added:
                what = f"'{new[j]}'"
                self.out.add("data", 2, f"data point {what}", f"An extra data point {what} appears in the chart.",
                             key=("extra", rp.index, what))
            result[axis] = (dropped, added, len(new))
        return result

    @staticmethod
    def _dropped_by_data(rp: Panel, cp: Panel) -> list[int] | None:
        """Reference indices of points the candidate's data leaves out, when the data is the reference's with
        those points deleted and nothing else (the series paired by order within their family)."""
        found = None
        for family in dict.fromkeys(s.family for s in rp.series):
            rs = [s for s in rp.series if s.family == family]
            cs = [s for s in cp.series if s.family == family]
            for r, c in zip(rs, cs):
                old, new = _points(r), _points(c)
                if old is None or new is None or len(new) >= len(old):
                    continue
                ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
                if any(op not in ("equal", "delete") for op, *_ in ops):
                    continue
                gone = [i for op, i1, i2, _, _ in ops if op == "delete" for i in range(i1, i2)]
                if found is not None and gone != found:
                    return None
                found = gone
        return found

    # --------------------------------------------------------------------------------------- series
    def _series(self, rp: Panel, cp: Panel, drops: dict) -> None:
        pairs: list[tuple[Series, Series]] = []
        left_ref: list[Series] = []
        left_cand: list[Series] = []
        for family in dict.fromkeys([s.family for s in rp.series] + [s.family for s in cp.series]):
            rs = [s for s in rp.series if s.family == family]
            cs = [s for s in cp.series if s.family == family]
            for i, j in align(rs, cs, _series_similarity, 0.5, fill_gaps=True):
                if i is not None and j is not None:
                    pairs.append((rs[i], cs[j]))
                elif i is not None:
                    left_ref.append(rs[i])
                else:
                    left_cand.append(cs[j])
        # a series of another kind in place of a missing one: the chart type changed
        left_ref.sort(key=lambda s: s.index)
        left_cand.sort(key=lambda s: s.index)
        k = min(len(left_ref), len(left_cand))
        changed = list(zip(left_ref[:k], left_cand[:k]))
        for r, c in changed:
            where = self.where(r.call, rp)
            self.out.add("structure", 3, f"{_KIND_WORD.get(r.kind, r.kind)} series of the {where}",
                         f"The {_KIND_WORD.get(r.kind, r.kind)} series is drawn as a "
                         f"{_KIND_WORD.get(c.kind, c.kind)} chart instead.")
        for r in left_ref[k:]:
            where = self.where(r.call, rp)
            name = f"'{r.label}'" if r.label else "one"
            self.out.add("structure", 3, f"{name} series of the {where}", f"The {name} series ({r.kind}) is not drawn.")
        for c in left_cand[k:]:
            where = self.where(c.call, rp)
            name = f" '{c.label}'" if c.label else ""
            self.out.add("structure", 2, f"extra {c.kind} series of the {where}",
                         f"An extra {_KIND_WORD.get(c.kind, c.kind)} series{name} is drawn.")
        alignments: dict = {}
        for (r, c), in_family in [(p, True) for p in pairs] + [(p, False) for p in changed]:
            same_kind = r.kind == c.kind
            if not same_kind and in_family:
                self._kind_change(r, c, rp)
            self._data(r, c, rp, drops, alignments)
            self._label(r, c)
            self._colors(r, c, rp)
            if same_kind:
                self._keywords(r, c, rp)
                self._stacking(r, c, rp)

    def _stacking(self, r: Series, c: Series, rp: Panel) -> None:
        """Stacked bars start where the previous series ends; only whether they are stacked is compared (the
        offsets follow from the data, already compared)."""
        if r.family != "bar":
            return
        key = "bottom" if r.kind == "bar" else "left"

        def stacked(s: Series) -> bool:
            v = as_numbers(s.style.get(key))
            return v is not None and any(x != 0 for x in v)

        a, b = stacked(r), stacked(c)
        if a != b:
            where = self.where(r.call, rp)
            desc = "The bars are not stacked: they all start at zero." if a else \
                "The bars are stacked on top of other bars instead of starting at zero."
            self.out.add("structure", 3, f"bars of the {where}", desc, key=("stacking", rp.index))

    def _kind_change(self, r: Series, c: Series, rp: Panel) -> None:
        where = self.where(r.call, rp)
        if {r.kind, c.kind} == {"bar", "barh"}:
            was, now = ("vertical", "horizontal") if r.kind == "bar" else ("horizontal", "vertical")
            self.out.add("structure", 3, f"bars of the {where}", f"The bars are {now} instead of {was}.")
        elif r.kind == "plot" and c.kind == "scatter":
            self.out.add("structure", 3, f"line series of the {where}",
                         "A line series is drawn as unconnected scatter points.")
        elif r.kind == "scatter" and c.kind == "plot":
            self.out.add("structure", 3, f"scatter series of the {where}",
                         "A scatter series is drawn as a connected line.")
        else:
            self.out.add("structure", 3, f"{_KIND_WORD.get(r.kind, r.kind)} series of the {where}",
                         f"The {_KIND_WORD.get(r.kind, r.kind)} series is drawn as a "
                         f"{_KIND_WORD.get(c.kind, c.kind)} chart instead.")

    def _series_desc(self, lst, series: Series) -> str:
        origin = self.ref.origins.get(id(lst))
        if origin:
            var, name = origin
            return f"'{var}'" + (f" ({name})" if name else "")
        if series.label:
            return f"the '{series.label}' series"
        return f"the {_KIND_WORD.get(series.kind, series.kind)} series"

    def _data(self, r: Series, c: Series, rp: Panel, drops: dict, alignments: dict) -> None:
        for role, old in r.arrays.items():
            new = c.arrays.get(role)
            if new is None or (role == "x" and r.family == "bar"):
                continue
            om, nm = as_matrix(old), as_matrix(new)
            if om is not None and nm is not None:
                self._rows(om, nm, r, rp, drops, alignments)
                continue
            o, n = as_numbers(old), as_numbers(new)
            if o is None or n is None:
                continue
            self._values(o, n, r, rp, drops.get(r.cat_axis), alignments)

    def _alignment(self, n_ref: int, n_cand: int, known, alignments: dict, seq_ref, seq_cand):
        """(dropped ref indices, added cand indices) aligning a reference list with a candidate one: from the
        category labels when they explain the lengths, else from lists of the same lengths seen before in this
        panel (parallel lists), else from the values themselves."""
        if known is not None:
            dropped, added, n_c = known
            if n_ref - len(dropped) + len(added) == n_cand and n_c == n_cand:
                return dropped, added, True
        if (n_ref, n_cand) in alignments:
            return alignments[(n_ref, n_cand)] + (True,)
        dropped, added = [], []
        sm = difflib.SequenceMatcher(None, [_key(x) for x in seq_ref], [_key(x) for x in seq_cand], autojunk=False)
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            if op in ("delete", "replace") and i2 - i1 > j2 - j1:
                dropped += list(range(i1 + (j2 - j1), i2))
            if op in ("insert", "replace") and j2 - j1 > i2 - i1:
                added += list(range(j1 + (i2 - i1), j2))
        alignments[(n_ref, n_cand)] = (dropped, added)
        return dropped, added, False

    def _point_name(self, i: int, r: Series, rp: Panel) -> str:
        cats = r.cats or self._category_lists(rp).get(r.cat_axis)
        return f"'{cats[i]}'" if cats and i < len(cats) else f"point {i + 1}"

    def _report_drops(self, dropped, added, r: Series, rp: Panel, explained: bool) -> None:
        """Missing points (one error each, shared by parallel lists through the key); added points unless the
        category labels or a parallel list already explained them."""
        if len(dropped) > 3 and not explained:
            names = ", ".join(self._point_name(i, r, rp) for i in dropped)
            self.out.add("data", 3, f"data points of {self._series_desc(None, r)}",
                         f"{len(dropped)} data points are missing from the chart: {names}.",
                         key=("drops", rp.index, tuple(dropped)))
            dropped = []
        for i in dropped:
            what = self._point_name(i, r, rp)
            self.out.add("data", 3, f"data point {what}", f"The data point {what} is missing from the chart.",
                         key=("drop", rp.index, what))
        if len(added) > 3 and not explained:
            self.out.add("data", 2, f"data points of {self._series_desc(None, r)}",
                         f"{len(added)} extra data points appear in the chart.", key=("extras", rp.index, len(added)))
            added = []
        for j in [] if explained else added:
            what = f"point {j + 1}"
            self.out.add("data", 2, f"data point {what}", f"An extra data point {what} appears in the chart.",
                         key=("extra", rp.index, what))

    def _values(self, old: list, new: list, r: Series, rp: Panel, known, alignments: dict) -> None:
        if len(old) != len(new):
            dropped, added, explained = self._alignment(len(old), len(new), known, alignments, old, new)
            self._report_drops(dropped, added, r, rp, explained)
            keep_ref = [i for i in range(len(old)) if i not in set(dropped)]
            keep_cand = [j for j in range(len(new)) if j not in set(added)]
            if len(keep_ref) != len(keep_cand):
                return
            index = keep_ref
            a, b = [old[i] for i in keep_ref], [new[j] for j in keep_cand]
        else:
            index, a, b = list(range(len(old))), old, new
        desc = self._series_desc(old, r)
        changed = [k for k in range(len(a)) if not _same(a[k], b[k])]
        if not changed:
            return
        key = id(old) if id(old) in self.ref.origins else (rp.index, r.index, id(old))
        if len(changed) == 2 and _same(a[changed[0]], b[changed[1]]) and _same(a[changed[1]], b[changed[0]]):
            i, j = index[changed[0]], index[changed[1]]
            self.out.add("data", 2, f"points {i + 1} and {j + 1} of {desc}",
                         f"The values of points {i + 1} and {j + 1} are swapped.", key=("swap", key, i, j))
            return
        severities = [scale_severity((b[k] - a[k]) / abs(a[k]) if a[k] else 1.0) for k in changed]
        if len(changed) > 3 or (len(a) >= 3 and len(changed) == len(a)):  # a wrong series, not wrong points
            k = changed[0]
            self.out.add("data", max(severities), f"data of {desc}",
                         f"The values of {desc} differ at {len(changed)} of {len(a)} points; for example point "
                         f"{index[k] + 1} is {b[k]} instead of {a[k]}.", key=("values", key))
            return
        for k, sev in zip(changed, severities):
            i = index[k]
            self.out.add("data", sev, f"data point {i + 1} of {desc}",
                         f"The value plotted for point {i + 1} is {b[k]} instead of {a[k]}.", key=("value", key, i))

    def _rows(self, old: list, new: list, r: Series, rp: Panel, drops: dict, alignments: dict) -> None:
        """A list of lists (box groups, heatmap rows): whole rows dropped or added, then values per row."""
        axis = "y" if r.family == "grid" else "x"
        if len(old) != len(new):
            dropped, added, explained = self._alignment(len(old), len(new), drops.get(axis), alignments, old, new)
            self._report_drops(dropped, added, r, rp, explained)
            keep_ref = [i for i in range(len(old)) if i not in set(dropped)]
            keep_cand = [j for j in range(len(new)) if j not in set(added)]
        else:
            keep_ref, keep_cand = list(range(len(old))), list(range(len(new)))
        for i, j in zip(keep_ref, keep_cand):
            self._values(old[i], new[j], r, rp, None, {})

    def _label(self, r: Series, c: Series) -> None:
        if r.label == c.label:
            return
        if r.label and c.label:
            self.out.add("text", 1 if is_typo(r.label, c.label) else 2, f"legend entry '{r.label}'",
                         f"The series labelled '{r.label}' is labelled '{c.label}'.")
        elif r.label:
            self.out.add("text", 2, f"legend entry '{r.label}'", f"The series labelled '{r.label}' has no label.")
        else:
            self.out.add("text", 1, f"legend entry '{c.label}'", f"An extra legend label '{c.label}' appears.")

    def _colors(self, r: Series, c: Series, rp: Panel) -> None:
        for key in ("color", "colors", "facecolor"):
            old, new = r.style.get(key), c.style.get(key)
            if old is None or new is None:
                continue
            olds = old if isinstance(old, (list, tuple)) else [old]
            news = new if isinstance(new, (list, tuple)) else [new]
            for a, b in zip(olds, news):
                self._color_change(a, b)

    def _color_change(self, a, b) -> None:
        if not isinstance(a, str) or not isinstance(b, str) or _norm_color(a) == _norm_color(b):
            return
        def named(c: str) -> str:
            return _color_name(c) if _color_name(c) == c else f"{_color_name(c)} ({c})"

        self.out.add("style", 2, f"{_color_name(a)} elements", f"Elements drawn in {named(a)} are {named(b)}.",
                     key=("color", _norm_color(a), _norm_color(b)))

    def _keywords(self, r: Series, c: Series, rp: Panel) -> None:
        where = self.where(r.call, rp)
        for key, (category, severity, what, default) in _KEYWORDS.items():
            if key == "marker" and r.kind == "scatter":
                default = "o"
            old, new = r.style.get(key, default), c.style.get(key, default)
            if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) != len(new):
                continue  # a list keyword that lost an entry with a dropped point (pie explode)
            if _same(old, new) or old is UNKNOWN or new is UNKNOWN:
                continue
            if key == "edgecolor" and _norm_color(old) == _norm_color(new):
                continue
            self.out.add(category, severity, f"{what} in the {where}", f"The {what} is {_show(new)} instead of "
                                                                       f"{_show(old)}.")

    # ------------------------------------------------------------------------------ other elements
    def _legend(self, rp: Panel, cp: Panel) -> None:
        old, new = rp.last("legend"), cp.last("legend")
        where = self.where(old or new, rp)
        if old is not None and new is None:
            self.out.add("structure", 2, f"legend of the {where}", "The legend is missing.")
        elif new is not None and old is None:
            self.out.add("structure", 1, f"legend of the {where}", "A legend is shown that should not be there.")
        elif old is not None:
            a, b = old.kwargs.get("loc", "best"), new.kwargs.get("loc", "best")
            if a != b:
                self.out.add("structure", 1, f"legend position in the {where}",
                             f"The legend position is {_show(b)} instead of {_show(a)}.")
            a, b = old.kwargs.get("frameon", True), new.kwargs.get("frameon", True)
            if a != b:
                self.out.add("style", 1, f"legend of the {where}",
                             f"The legend is drawn {'with' if b else 'without'} a frame.")

    def _grid(self, rp: Panel, cp: Panel) -> None:
        def visible(call: Call | None) -> bool:
            return call is not None and not (call.args and call.args[0] is False) \
                and call.kwargs.get("visible", True) is not False

        old, new = rp.last("grid"), cp.last("grid")
        where = self.where(old or new, rp)
        if visible(old) and not visible(new):
            self.out.add("style", 1, f"grid of the {where}", "The grid lines are missing.")
        elif visible(new) and not visible(old):
            self.out.add("style", 1, f"grid of the {where}", "Grid lines are drawn that should not be there.")
        elif visible(old):
            for key, what, default in (("linestyle", "line style", "-"), ("alpha", "transparency (alpha)", 1.0),
                                       ("axis", "grid axes", "both"), ("linewidth", "line width", None)):
                kw_old = {ALIASES.get(k, k): v for k, v in old.kwargs.items()}
                kw_new = {ALIASES.get(k, k): v for k, v in new.kwargs.items()}
                a, b = kw_old.get(key, default), kw_new.get(key, default)
                if not _same(a, b):
                    self.out.add("style", 1, f"{what} in the {where}", f"The {what} is {_show(b)} instead of {_show(a)}.")

    def _annotations(self, rp: Panel, cp: Panel) -> None:
        for method, missing in (("annotate", "The annotation arrow and text is missing."),
                                ("bar_label", "The value labels on the bars are missing.")):
            olds, news = rp.all(method), cp.all(method)
            for k, old in enumerate(olds):
                where = self.where(old, rp)
                if k >= len(news):
                    self.out.add("text", 2, f"annotations of the {where}", missing)
                    continue
                new = news[k]
                if method == "annotate":
                    a, b = _text_arg(old), _text_arg(new)
                    if a and b and a != b:
                        self.out.add("text", 1 if is_typo(a, b) else 2, f"annotations of the {where}",
                                     f"The annotation reads '{b}' instead of '{a}'.")
                a, b = old.kwargs.get("fontsize"), new.kwargs.get("fontsize")
                if not _same(a, b):
                    self.out.add("style", 1, f"font size in the {where}",
                                 f"The font size is {_show(b)} instead of {_show(a)}.")
            for new in news[len(olds):]:
                where = self.where(new, rp)
                what = f"annotation '{_text_arg(new)}'" if method == "annotate" else "value labels on the bars"
                self.out.add("text", 1, f"annotations of the {where}", f"An extra {what} appears.")

    def _texts(self, olds: list[Call], news: list[Call], panel: Panel) -> None:
        """Free text (ax.text): string contents compared in order; numbers drawn from data are the data's."""
        for k, old in enumerate(olds):
            where = self.where(old, panel)
            a = old.args[2] if len(old.args) > 2 else None
            if k >= len(news):
                if isinstance(a, str) and a.strip():
                    self.out.add("text", 2, f"text of the {where}", f"The text '{a}' is missing.")
                continue
            new = news[k]
            b = new.args[2] if len(new.args) > 2 else None
            if isinstance(a, str) and isinstance(b, str) and a != b:
                self.out.add("text", 1 if is_typo(a, b) else 2, f"text of the {where}",
                             f"The text reads '{b}' instead of '{a}'.")
            fa, fb = old.kwargs.get("fontsize"), new.kwargs.get("fontsize")
            if not _same(fa, fb):
                self.out.add("style", 1, f"font size in the {where}",
                             f"The font size is {_show(fb)} instead of {_show(fa)}.")
        for new in news[len(olds):]:
            b = new.args[2] if len(new.args) > 2 else None
            if isinstance(b, str) and b.strip():
                self.out.add("text", 1, f"text of the {self.where(new, panel)}", f"An extra text '{b}' appears.")

    def _axes_details(self, rp: Panel, cp: Panel) -> None:
        for axis in "xy":
            old, new = rp.last(f"invert_{axis}axis"), cp.last(f"invert_{axis}axis")
            if (old is None) != (new is None):
                where = self.where(old or new, rp)
                what = "category order" if axis == "y" else "order"
                self.out.add("structure", 2, f"{axis}-axis of the {where}",
                             f"The {what} on the {axis}-axis is reversed.")
            old, new = rp.last(f"set_{axis}scale"), cp.last(f"set_{axis}scale")
            a = old.args[0] if old is not None and old.args else "linear"
            b = new.args[0] if new is not None and new.args else "linear"
            if a != b:
                self.out.add("structure", 2, f"{axis}-axis of the {self.where(old or new, rp)}",
                             f"The {axis}-axis scale is {_show(b)} instead of {_show(a)}.")
            old, new = rp.last(f"set_{axis}lim"), cp.last(f"set_{axis}lim")
            a = tuple(old.args[0]) if old is not None and old.args and isinstance(old.args[0], (list, tuple)) \
                else tuple(old.args) if old is not None else None
            b = tuple(new.args[0]) if new is not None and new.args and isinstance(new.args[0], (list, tuple)) \
                else tuple(new.args) if new is not None else None
            if not _same(a, b) and (a is None or all(is_number(x) for x in a)) \
                    and (b is None or all(is_number(x) for x in b)):
                self.out.add("structure", 1, f"{axis}-axis of the {self.where(old or new, rp)}",
                             f"The {axis}-axis range is {_show(list(b) if b else None)} instead of "
                             f"{_show(list(a) if a else None)}.")
            old, new = rp.last(f"set_{axis}ticklabels"), cp.last(f"set_{axis}ticklabels")
            if old is not None and new is not None:
                a, b = old.kwargs.get("rotation", 0), new.kwargs.get("rotation", 0)
                if not _same(a, b):
                    self.out.add("text", 1, f"{axis}-axis tick labels of the {self.where(old, rp)}",
                                 f"The tick labels are rotated by {_show(b)} instead of {_show(a)} degrees.")
        off = [any(c.args and c.args[0] == "off" for c in p.all("axis")) for p in (rp, cp)]
        if off[0] != off[1]:
            self.out.add("structure", 1, f"axes of the {self.where(None, rp)}",
                         "The axes are hidden." if off[1] else "The axes are shown but should be hidden.")
        ref_bar = any(c.panel == rp.index for c in self.ref.figure_calls.get("colorbar", []))
        cand_bar = any(c.panel == cp.index for c in self.cand.figure_calls.get("colorbar", []))
        if ref_bar != cand_bar:
            where = self.where(None, rp)
            self.out.add("structure", 2, f"colour bar of the {where}",
                         "The colour bar is missing." if ref_bar else "An extra colour bar is drawn.")

    def _artist_colors(self, rp: Panel, cp: Panel) -> None:
        """Colours set on returned artists (box patches, bars): compared in order."""
        def colors(p: Panel) -> list:
            out = []
            for method in ("artist.set_facecolor", "artist.set_color"):
                out += [c.args[0] for c in p.all(method) if c.args]
            return out

        for a, b in zip(colors(rp), colors(cp)):
            self._color_change(a, b)


def _last(calls: dict, method: str) -> Call | None:
    found = calls.get(method)
    return found[-1] if found else None


def _text_arg(call: Call | None) -> str:
    if call is None:
        return ""
    v = call.args[0] if call.args else call.kwargs.get("label", call.kwargs.get("text", call.kwargs.get("s")))
    return v.strip() if isinstance(v, str) else ""


def _points(s: Series) -> list | None:
    """The series' main values as hashable points: numbers, or whole rows for box groups and heatmaps."""
    for role in ("y", "y1", "shares", "samples", "groups", "matrix"):
        if role in s.arrays:
            v = s.arrays[role]
            rows = as_matrix(v)
            if rows is not None:
                return [tuple(r) for r in rows]
            return as_numbers(v)
    return None


def _key(x):
    return tuple(x) if isinstance(x, list) else x


def _series_similarity(a: Series, b: Series) -> float:
    if a.label and b.label and a.label == b.label:
        return 1.0
    pa, pb = a.primary, b.primary
    data = dice([round(x, 6) for x in pa if is_number(x)], [round(x, 6) for x in pb if is_number(x)]) \
        if pa or pb else 0.5
    same_kind = 0.1 if a.kind == b.kind else 0.0
    return min(1.0, 0.2 + 0.7 * data + same_kind)
