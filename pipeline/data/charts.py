"""Seeded generator of matplotlib chart programs.

Programs are written the way people write them (module-level data lists, one call per element, keyword
styling) so that the targeted-edit transforms in `edits/chart.py` find real AST nodes to change: a data list,
a `color=` keyword, a `set_title` call. Data is hard-coded (no numpy random at render time) so a program
always draws the same picture.
"""

from __future__ import annotations

import random
from typing import Callable

from pipeline.data.vocab import (
    AXIS_NAMES,
    CATEGORY_SETS,
    CMAPS,
    HATCHES,
    LINESTYLES,
    MARKERS,
    PALETTE,
    SERIES_NAMES,
    TOPICS,
    UNITS,
    WORDS,
)

CHART_TYPES = ("bar", "grouped_bar", "stacked_bar", "barh", "line", "scatter", "pie", "histogram", "area",
               "box", "heatmap")


def _num(rng: random.Random, lo: float, hi: float, decimals: int) -> float | int:
    v = rng.uniform(lo, hi)
    return int(round(v)) if decimals == 0 else round(v, decimals)


def _series(rng: random.Random, n: int, decimals: int, trend: bool = False, scale: float | None = None) -> list:
    """n values on one magnitude; series that share a panel should share `scale` so they are comparable."""
    scale = scale or rng.choice([1, 10, 100, 1000])
    if scale == 1:
        decimals = max(decimals, 2)  # integers in 0.1..1 would round to 0 and 1
    lo = 0.15 if not trend else 0.05

    def value(v: float):
        v = max(lo * scale, v)
        return round(v, decimals) if decimals else int(round(v))

    if trend:
        start, step = rng.uniform(0.2, 0.6) * scale, rng.uniform(-0.08, 0.12) * scale
        return [value(start + i * step + rng.uniform(-0.1, 0.1) * scale) for i in range(n)]
    return [value(rng.uniform(0.1, 1.0) * scale) for _ in range(n)]


def _colors(rng: random.Random, k: int) -> list[str]:
    return rng.sample(list(PALETTE.values()), k)


def _title(rng: random.Random) -> str:
    return f"{rng.choice(TOPICS)} {rng.choice(WORDS)}"


class _Panel:
    """Code lines for one axes; `v` prefixes variable names so two panels can share a script."""

    def __init__(self, rng: random.Random, ax: str, v: str):
        self.rng, self.ax, self.v, self.lines = rng, ax, v, []

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def var(self, name: str, value) -> str:
        full = f"{self.v}{name}"
        self.emit(f"{full} = {value!r}")
        return full

    def labels(self, xlabel: bool = True, ylabel: bool = True, title: bool = True) -> None:
        rng, ax = self.rng, self.ax
        if title and rng.random() < 0.9:
            size = rng.choice(["", ", fontsize=14", ", fontsize=12, fontweight='bold'"])
            self.emit(f"{ax}.set_title({_title(rng)!r}{size})")
        if xlabel and rng.random() < 0.8:
            self.emit(f"{ax}.set_xlabel({rng.choice(AXIS_NAMES)!r})")
        if ylabel and rng.random() < 0.8:
            self.emit(f"{ax}.set_ylabel({(rng.choice(TOPICS) + ' ' + rng.choice(UNITS))!r})")

    def legend(self) -> None:
        loc = self.rng.choice(["best", "upper left", "upper right", "lower right", "center left"])
        frame = self.rng.choice(["", ", frameon=False"])
        self.emit(f"{self.ax}.legend(loc={loc!r}{frame})")

    def grid(self, axis: str = "y") -> None:
        if self.rng.random() < 0.5:
            ls = self.rng.choice(LINESTYLES[1:])
            self.emit(f"{self.ax}.grid(axis={axis!r}, linestyle={ls!r}, alpha={self.rng.choice([0.3, 0.5, 0.7])})")

    def annotate_max(self, xs: str, ys: str) -> None:
        if self.rng.random() < 0.35:
            self.emit(f"{self.v}i_max = {ys}.index(max({ys}))")
            self.emit(f"{self.ax}.annotate('peak', xy=({xs}[{self.v}i_max], {ys}[{self.v}i_max]), "
                      f"xytext=(0, 12), textcoords='offset points', ha='center', "
                      f"arrowprops=dict(arrowstyle='->', color='#333333'))")


def _bar(p: _Panel) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)
    c = p.var("categories", cats)
    vals = p.var("values", _series(rng, len(cats), rng.choice([0, 1])))
    edge = rng.choice(["", ", edgecolor='black'", ", edgecolor='white', linewidth=1.5"])
    hatch = f", hatch={rng.choice(HATCHES)!r}" if rng.random() < 0.15 else ""
    color = rng.choice(list(PALETTE.values()))
    has_label = rng.random() < 0.4
    label = f", label={rng.choice(SERIES_NAMES)!r}" if has_label else ""
    p.emit(f"bars = {p.ax}.bar({c}, {vals}, color={color!r}, width={rng.choice([0.5, 0.6, 0.8])}{edge}{hatch}{label})")
    if rng.random() < 0.4:
        p.emit(f"{p.ax}.bar_label(bars, padding=2, fontsize=9)")
    p.labels()
    p.grid()
    p.annotate_max(c, vals)
    if has_label:
        p.legend()


def _grouped_or_stacked(p: _Panel, stacked: bool) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)
    k = rng.randint(2, 4)
    names = rng.sample(SERIES_NAMES, k)
    colors = _colors(rng, k)
    c = p.var("categories", cats)
    decimals = rng.choice([0, 1])
    scale = rng.choice([10, 100, 1000])
    data = {names[i]: _series(rng, len(cats), decimals, scale=scale) for i in range(k)}
    d = p.var("data", data)
    p.var("colors", colors)
    p.emit(f"{p.v}x = np.arange(len({c}))")
    if stacked:
        p.emit(f"{p.v}bottom = np.zeros(len({c}))")
        p.emit(f"for ({p.v}name, {p.v}vals), {p.v}color in zip({d}.items(), {p.v}colors):")
        p.emit(f"    {p.ax}.bar({p.v}x, {p.v}vals, 0.6, bottom={p.v}bottom, label={p.v}name, color={p.v}color)")
        p.emit(f"    {p.v}bottom += np.array({p.v}vals)")
    else:
        p.emit(f"{p.v}width = {round(0.8 / k, 3)}")
        p.emit(f"for {p.v}i, ({p.v}name, {p.v}vals) in enumerate({d}.items()):")
        p.emit(f"    {p.ax}.bar({p.v}x + ({p.v}i - {(k - 1) / 2}) * {p.v}width, {p.v}vals, {p.v}width, "
               f"label={p.v}name, color={p.v}colors[{p.v}i])")
    p.emit(f"{p.ax}.set_xticks({p.v}x)")
    rot = rng.choice([0, 0, 30, 45])
    p.emit(f"{p.ax}.set_xticklabels({c}" + (f", rotation={rot})" if rot else ")"))
    p.labels()
    p.grid()
    p.legend()


def _barh(p: _Panel) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)
    c = p.var("labels", cats)
    vals = p.var("values", _series(rng, len(cats), rng.choice([0, 1])))
    p.emit(f"{p.ax}.barh({c}, {vals}, color={rng.choice(list(PALETTE.values()))!r}, height=0.6)")
    if rng.random() < 0.5:
        p.emit(f"{p.ax}.invert_yaxis()")
    p.labels()
    p.grid("x")


def _line(p: _Panel) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)
    k = rng.randint(1, 3)
    names = rng.sample(SERIES_NAMES, k)
    colors = _colors(rng, k)
    x = p.var("x", cats)
    scale, decimals = rng.choice([1, 10, 100, 1000]), rng.choice([0, 1, 2])
    ys = [p.var(f"y{i + 1}", _series(rng, len(cats), decimals, trend=True, scale=scale)) for i in range(k)]
    for i in range(k):
        marker = f", marker={rng.choice(MARKERS)!r}" if rng.random() < 0.7 else ""
        ls = f", linestyle={rng.choice(LINESTYLES)!r}" if rng.random() < 0.4 else ""
        lw = f", linewidth={rng.choice([1, 1.5, 2, 2.5])}"
        p.emit(f"{p.ax}.plot({x}, {ys[i]}, color={colors[i]!r}{marker}{ls}{lw}, label={names[i]!r})")
    p.labels()
    p.grid("both")
    p.annotate_max(x, ys[0])
    if k > 1 or rng.random() < 0.5:
        p.legend()


def _scatter(p: _Panel) -> None:
    rng = p.rng
    k = rng.randint(1, 3)
    names = rng.sample(SERIES_NAMES, k)
    colors = _colors(rng, k)
    for i in range(k):
        n = rng.randint(8, 20)
        cx, cy = rng.uniform(0, 10), rng.uniform(0, 10)
        xs = [round(cx + rng.gauss(0, 2), 2) for _ in range(n)]
        ys = [round(cy + rng.gauss(0, 2), 2) for _ in range(n)]
        xv, yv = p.var(f"x{i + 1}", xs), p.var(f"y{i + 1}", ys)
        size = rng.choice([20, 40, 60, 90])
        p.emit(f"{p.ax}.scatter({xv}, {yv}, s={size}, color={colors[i]!r}, marker={rng.choice(MARKERS[:5])!r}, "
               f"alpha={rng.choice([0.6, 0.8, 1.0])}, label={names[i]!r})")
    p.labels()
    p.grid("both")
    if k > 1:
        p.legend()


def _pie(p: _Panel) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)[: rng.randint(3, 6)]
    c = p.var("labels", cats)
    s = p.var("shares", [rng.randint(5, 40) for _ in cats])
    p.var("colors", _colors(rng, len(cats)))
    explode = ""
    if rng.random() < 0.4:
        e = [0.0] * len(cats)
        e[rng.randrange(len(cats))] = 0.1
        explode = f", explode={e!r}"
    donut = ", wedgeprops=dict(width=0.45)" if rng.random() < 0.3 else ""
    pct = rng.choice(["'%1.1f%%'", "'%1.0f%%'"])
    p.emit(f"{p.ax}.pie({s}, labels={c}, colors={p.v}colors, autopct={pct}, startangle={rng.choice([0, 90, 140])}"
           f"{explode}{donut})")
    p.emit(f"{p.ax}.axis('equal')")
    p.labels(xlabel=False, ylabel=False)


def _histogram(p: _Panel) -> None:
    rng = p.rng
    mu, sigma = rng.uniform(20, 80), rng.uniform(5, 15)
    samples = [round(rng.gauss(mu, sigma), 1) for _ in range(rng.randint(40, 80))]
    s = p.var("samples", samples)
    p.emit(f"{p.ax}.hist({s}, bins={rng.choice([8, 10, 12, 15])}, color={rng.choice(list(PALETTE.values()))!r}, "
           f"edgecolor='black', alpha={rng.choice([0.7, 0.85, 1.0])})")
    if rng.random() < 0.5:
        p.emit(f"{p.ax}.axvline({round(mu, 1)}, color='#d62728', linestyle='--', label='mean')")
        p.legend()
    p.labels()


def _area(p: _Panel) -> None:
    rng = p.rng
    cats = rng.choice(CATEGORY_SETS)
    k = rng.randint(1, 3)
    names = rng.sample(SERIES_NAMES, k)
    x = p.var("x", list(range(1, len(cats) + 1)))
    scale = rng.choice([10, 100, 1000])
    ys = [p.var(f"y{i + 1}", _series(rng, len(cats), 1, trend=True, scale=scale)) for i in range(k)]
    colors = _colors(rng, k)
    if k > 1 and rng.random() < 0.6:
        p.emit(f"{p.ax}.stackplot({x}, {', '.join(ys)}, labels={names!r}, colors={colors!r}, alpha=0.8)")
    else:
        for i in range(k):
            p.emit(f"{p.ax}.fill_between({x}, {ys[i]}, color={colors[i]!r}, alpha=0.4, label={names[i]!r})")
            p.emit(f"{p.ax}.plot({x}, {ys[i]}, color={colors[i]!r})")
    p.labels()
    p.legend()


def _box(p: _Panel) -> None:
    rng = p.rng
    k = rng.randint(3, 5)
    groups = rng.choice(CATEGORY_SETS)[:k]
    data = []
    for _ in range(len(groups)):
        mu, sd = rng.uniform(10, 50), rng.uniform(2, 10)
        data.append([round(rng.gauss(mu, sd), 1) for _ in range(15)])
    d = p.var("groups", data)
    lab = p.var("names", groups)
    color = rng.choice(list(PALETTE.values()))
    p.emit(f"{p.v}box = {p.ax}.boxplot({d}, patch_artist=True, widths={rng.choice([0.4, 0.5, 0.6])})")
    p.emit(f"for {p.v}patch in {p.v}box['boxes']:")
    p.emit(f"    {p.v}patch.set_facecolor({color!r})")
    p.emit(f"{p.ax}.set_xticks(range(1, len({lab}) + 1))")
    p.emit(f"{p.ax}.set_xticklabels({lab})")
    p.labels()
    p.grid()


def _heatmap(p: _Panel) -> None:
    rng = p.rng
    rows = rng.choice(CATEGORY_SETS)[: rng.randint(3, 5)]
    cols = rng.choice(CATEGORY_SETS)[: rng.randint(3, 6)]
    mat = [[round(rng.uniform(0, 1), 2) for _ in cols] for _ in rows]
    m = p.var("matrix", mat)
    r, c = p.var("rows", rows), p.var("cols", cols)
    p.emit(f"{p.v}im = {p.ax}.imshow({m}, cmap={rng.choice(CMAPS)!r}, vmin=0, vmax=1)")
    p.emit(f"{p.ax}.set_xticks(range(len({c})))")
    p.emit(f"{p.ax}.set_xticklabels({c})")
    p.emit(f"{p.ax}.set_yticks(range(len({r})))")
    p.emit(f"{p.ax}.set_yticklabels({r})")
    if rng.random() < 0.6:
        p.emit(f"for {p.v}i in range(len({r})):")
        p.emit(f"    for {p.v}j in range(len({c})):")
        p.emit(f"        {p.ax}.text({p.v}j, {p.v}i, {m}[{p.v}i][{p.v}j], ha='center', va='center', fontsize=8)")
    p.emit(f"fig.colorbar({p.v}im, ax={p.ax})")
    p.labels(xlabel=False, ylabel=False)


PANELS: dict[str, Callable[[_Panel], None]] = {
    "bar": _bar,
    "grouped_bar": lambda p: _grouped_or_stacked(p, stacked=False),
    "stacked_bar": lambda p: _grouped_or_stacked(p, stacked=True),
    "barh": _barh,
    "line": _line,
    "scatter": _scatter,
    "pie": _pie,
    "histogram": _histogram,
    "area": _area,
    "box": _box,
    "heatmap": _heatmap,
}


def generate_chart(rng: random.Random) -> tuple[str, dict]:
    """A matplotlib script (no savefig/show: the renderer captures the figure) and its metadata."""
    style = rng.choice(["default", "default", "ggplot", "seaborn-v0_8-whitegrid", "bmh", "classic"])
    head = ["import matplotlib.pyplot as plt", "import numpy as np", ""]
    if style != "default":
        head.append(f"plt.style.use({style!r})")
    if rng.random() < 0.2:  # a subplot figure: two panels side by side or stacked
        kinds = [rng.choice(CHART_TYPES) for _ in range(2)]
        rows, cols = rng.choice([(1, 2), (2, 1)])
        size = (10, 4.5) if cols == 2 else (6.4, 8)
        head.append(f"fig, (ax1, ax2) = plt.subplots({rows}, {cols}, figsize={size!r})")
        body = []
        for i, kind in enumerate(kinds, start=1):
            panel = _Panel(rng, f"ax{i}", f"p{i}_")
            PANELS[kind](panel)
            body += panel.lines + [""]
        if rng.random() < 0.6:
            body.append(f"fig.suptitle({_title(rng)!r}, fontsize=15)")
        meta = {"chart_type": "subplots", "panels": kinds}
    else:
        kind = rng.choice(CHART_TYPES)
        size = rng.choice([(6.4, 4.8), (8, 5), (7, 5), (6, 6)])
        head.append(f"fig, ax = plt.subplots(figsize={size!r})")
        panel = _Panel(rng, "ax", "")
        PANELS[kind](panel)
        body = panel.lines
        meta = {"chart_type": kind, "panels": [kind]}
    meta["style"] = style
    code = "\n".join(head + body + ["plt.tight_layout()"]) + "\n"
    return code, meta
