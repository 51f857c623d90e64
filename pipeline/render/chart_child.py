"""Chart kind: execute matplotlib code (Agg) and capture its figure(s) as pixels.

`warm()` runs once in the zygote: import pyplot and the modules chart code usually imports, draw a
representative figure and programs like the synthetic generators' (every chart type and style sheet), resolve
common fonts, so fonts, glyph and text-layout caches are hot; then the zygote freezes the heap.
`run()` runs in each forked child: seed, neutralise show()/savefig()/backend switches, exec, draw.
"""

from __future__ import annotations

import importlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.render.image import fit_to_size, rgba_to_rgb_on_white
from pipeline.render.result import RenderFailure
from pipeline.render.snippet import SnippetFailed, classify, last_line

# Imported in the zygote so snippets find them in sys.modules (fast, and no file access needed later).
# Heavy libraries (pandas: +68 MB resident, which every fork and exit pays for) are not here: snippets that
# import them go to a second zygote that preloads them (ChartConfig.heavy_modules).
PRELOAD = (
    "math", "random", "json", "datetime", "collections", "itertools", "functools", "re", "io", "string",
    "textwrap", "statistics", "decimal", "fractions", "csv", "copy", "operator", "calendar", "colorsys",
    "warnings", "numpy", "numpy.random", "matplotlib", "matplotlib.pyplot", "matplotlib.patches",
    "matplotlib.ticker", "matplotlib.dates", "matplotlib.colors", "matplotlib.cm", "matplotlib.gridspec",
    "matplotlib.lines", "matplotlib.path", "matplotlib.transforms", "matplotlib.font_manager",
    "matplotlib.collections", "matplotlib.patheffects", "matplotlib.markers", "matplotlib.table",
    "matplotlib.legend_handler", "matplotlib.animation", "mpl_toolkits.mplot3d", "mpl_toolkits.axes_grid1",
    "PIL.Image",
)

MIN_DPI = 20.0  # clamping never lowers the dpi below this (FreeType rejects tiny pixel sizes)
# Synthetic-generator programs drawn at warm-up (options["warm_generated"] overrides; 0 turns it off).
# Measured once, paired, on generated charts (noisy, loaded box): median ~15 ms less CPU per child; costs
# zygote start-up time.
WARMUP_GENERATED_CHARTS = 16
WARMUP_CHARTS_FILE = Path(__file__).with_name("warmup_charts.json")

_WARMUP_CODE = """
import matplotlib.pyplot as plt, numpy as np, datetime
x = np.arange(5)
fig, axes = plt.subplots(2, 3, figsize=(12, 7))
ax = axes[0, 0]
bars = ax.bar(x, [3, 5, 2, 6, 4], color=['#1f77b4', 'tab:orange', 'green', 'r', 'c'], label='bars', hatch='//')
ax.bar_label(bars, padding=2); ax.set_title('Title', fontsize=14, fontweight='bold'); ax.legend()
ax.set_xticks(x, ['Alpha', 'Beta', 'Gamma', 'Delta', 'Epsilon'], rotation=45); ax.set_xlabel('x label')
ax = axes[0, 1]
ax.plot(x, x ** 2, 'o--', label='line', linewidth=2); ax.scatter(x, x, s=40, c=x, cmap='viridis', alpha=0.5)
ax.fill_between(x, 0, x, alpha=.3); ax.annotate('peak', xy=(4, 16), xytext=(2, 12),
    arrowprops=dict(arrowstyle='->')); ax.grid(True, linestyle=':'); ax.legend(loc='upper left')
ax.errorbar(x, x + 1, yerr=0.5, fmt='s', capsize=3); ax.set_ylabel('$y^2$ (italic)', style='italic')
ax.twinx().plot(x, -x, color='gray')
axes[0, 2].pie([1, 2, 3], labels=['a', 'b', 'c'], autopct='%1.1f%%', explode=(0.05, 0, 0), shadow=True)
ax = axes[1, 0]
ax.barh(['one', 'two', 'three'], [3, 1, 2], color=plt.cm.Blues(np.linspace(0.3, 1, 3)))
ax.invert_yaxis(); ax.spines[['top', 'right']].set_visible(False); ax.set_xscale('log')
ax = axes[1, 1]
ax.hist(np.random.randn(500), bins=20, edgecolor='black', color='tab:purple')
ax.text(0.5, 0.9, 'boxed text', transform=ax.transAxes, bbox=dict(boxstyle='round', fc='w'), ha='center')
ax = axes[1, 2]
im = ax.imshow(np.random.rand(8, 8), cmap='coolwarm'); fig.colorbar(im, ax=ax)
days = [datetime.date(2024, 1, d) for d in range(1, 6)]
fig2, ax2 = plt.subplots(); ax2.plot(days, x); ax2.set_title('Dates', family='serif'); fig2.autofmt_xdate()
ax2.stackplot(days, x, x[::-1]); ax2.boxplot([x, x * 2], positions=[days[1].toordinal(), days[3].toordinal()])
fig.suptitle('Warm-up 0123456789', fontsize=16); fig.tight_layout()
"""


def warm(options: dict[str, Any]) -> None:
    # matplotlib: imported in the zygote at prewarm (backend Agg chosen first), never at module import
    import matplotlib

    matplotlib.use("Agg")
    for name in (*PRELOAD, *options.get("extra_preload", ())):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional module missing only costs speed later
            pass
    # pyplot only after the backend is set
    import matplotlib.pyplot as plt

    # Loaded here so trace=True children find it in memory; trace=False children never touch it.
    from pipeline.render import trace as chart_trace

    tracer = chart_trace.ChartTracer().__enter__()
    try:
        exec(compile(_WARMUP_CODE, "<warmup>", "exec"), {"__name__": "__warmup__"})
    finally:
        tracer.__exit__(None, None, None)
    # Drawn as children draw them: fitted into the configured output size, so fonts are cached at the sizes
    # they will be rasterised at.
    fit = tuple(options.get("size", (640, 480)))
    figures = [plt.figure(num) for num in plt.get_fignums()]
    for fig in figures:
        _savefig_rgba(fig, {}, max_side_px=2048, fit=fit)
    _savefig_rgba(figures[0], {"bbox_inches": "tight"}, max_side_px=2048, fit=fit)  # scripts often ask for it
    chart_trace.bound_trace(chart_trace.trace_figures(figures, tracer.calls, draw=False))
    plt.close("all")
    if options.get("warm_generated", WARMUP_GENERATED_CHARTS):
        _warm_generated_charts(options.get("warm_generated", WARMUP_GENERATED_CHARTS), fit)
    _warm_fonts()


def _warm_generated_charts(count: int, fit: tuple[int, int]) -> None:
    """Draw the kinds of programs the synthetic data generators write (every chart type, style sheet, subplot
    grid), so lazily built state they need (style sheets, fonts at their sizes, tick formatters, colormaps,
    text layout) is in the zygote's heap instead of being rebuilt by every child. The programs are a fixed
    file (`warmup_charts.json`, written from pipeline/data/charts.py; a test keeps it in step): the renderer
    is the ground floor and imports nothing from the data package."""
    # matplotlib: loaded by prewarm already; local for the names
    import matplotlib
    import matplotlib.pyplot as plt

    for code in json.loads(WARMUP_CHARTS_FILE.read_text())[:count]:
        try:
            with matplotlib.rc_context():  # the programs switch style sheets
                exec(compile(code, "<warmup-generated>", "exec"), {"__name__": "__warmup__"})
                for num in plt.get_fignums():
                    _savefig_rgba(plt.figure(num), {}, max_side_px=2048, fit=fit)
        except Exception:  # noqa: BLE001 - a generator bug only costs warm-up
            pass
        finally:
            plt.close("all")


def _warm_fonts() -> None:
    """Resolve the font properties chart code commonly asks for (findfont caches per family, size, weight,
    style), so a child does not score every installed font again for a title at fontsize=13."""
    # font lookup: only the warm-up needs it
    from matplotlib.font_manager import FontProperties, findfont, get_font

    sizes = [*range(6, 25), 26, 28, 30, 32, 36, "xx-small", "x-small", "small", "medium", "large", "x-large",
             "xx-large"]
    for family in ("sans-serif", "serif", "monospace"):
        for weight in ("normal", "bold"):
            for style in ("normal", "italic"):
                for size in sizes:
                    get_font(findfont(FontProperties(family=family, weight=weight, style=style, size=size)))


def run(code: str, size: tuple[int, int], options: dict[str, Any], timings: dict[str, float] | None = None,
        want_trace: bool = False) -> tuple[np.ndarray, dict | None]:
    """Execute the snippet and capture *the* figure (README, "What is the figure"): (HxWx3 RGB of exactly
    `size`, trace or None).

    `timings` receives exec_s (the snippet itself) and capture_s (drawing, RGBA→RGB, fitting; a savefig call
    draws while the snippet runs). With `want_trace` the plotting calls are recorded while the snippet runs
    and the captured figure is traced (pipeline/render/trace.py); a snippet that breaks the tracer
    costs only its trace, never the image: the trace is then {"error": ...}, which the zygote turns into
    trace=None with a detail.
    """
    # pyplot: loaded by prewarm already; local for the names
    import matplotlib.pyplot as plt

    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    np.random.seed(0)
    random.seed(0)
    try:
        compiled = compile(code, "<chart>", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: source contains null bytes
        raise SnippetFailed(RenderFailure.SYNTAX_ERROR, f"{type(e).__name__}: {e}"[:500]) from None
    tracer = _start_tracer() if want_trace else None
    output = _Output(size, options["max_side_px"], tracer)
    output.install()
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit:
        pass  # sys.exit() at the end of a script: keep what it drew
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        raise classify(e) from None
    t_exec = time.perf_counter()
    try:
        if output.saved is None:
            shown = output.shown
            figure = shown if shown is not None else plt.gcf() if plt.get_fignums() else None
            if figure is None:
                raise SnippetFailed(RenderFailure.NO_FIGURE, "the code created no matplotlib figure")
            output.capture(figure, {})
    except BaseException as e:  # noqa: BLE001 - drawing bad data raises from deep inside matplotlib
        raise classify(e) from None
    rgb, trace = output.saved
    timings["capture_s"] = output.capture_s
    timings["exec_s"] = t_exec - t0 - output.capture_s
    if tracer is not None:
        timings["trace_s"] = output.trace_s
        if not isinstance(tracer, str):
            try:
                tracer.__exit__(None, None, None)
            except BaseException:  # noqa: BLE001 - a snippet may have broken it; its trace says so already
                pass
    return rgb, trace


# savefig() arguments that change the picture; the rest (fname, format, dpi, metadata, ...) change only the
# file or its resolution: the figure is always drawn at the dpi that fits it into the output size.
SAVEFIG_SETTINGS = ("facecolor", "edgecolor", "transparent", "bbox_inches", "pad_inches", "bbox_extra_artists")


class _Output:
    """Which figure a script outputs, and its pixels. savefig() (Figure.savefig, pyplot.savefig) draws the
    figure right then, with the call's settings, as the script's file would be; the last call wins. show() /
    pause() note the current figure, drawn after the script ends with rcParams' savefig settings, if the
    script never saved. No file is written and no window opened; backend switches are ignored (Agg)."""

    def __init__(self, size: tuple[int, int], max_side_px: int, tracer):
        self.size, self.max_side_px, self.tracer = size, max_side_px, tracer
        self.saved: tuple[np.ndarray, dict | None] | None = None
        self.shown = None
        self.capture_s = self.trace_s = 0.0

    def install(self) -> None:
        # matplotlib: loaded by prewarm already; local for the names
        import matplotlib
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        _real_savefig()  # before it is replaced
        output = self

        def savefig(self, *args, **kwargs):
            output.capture(self, kwargs)

        def pyplot_savefig(*args, **kwargs):
            output.capture(plt.gcf(), kwargs)

        def show(*args, **kwargs):
            if plt.get_fignums():
                output.shown = plt.gcf()

        Figure.savefig = savefig
        plt.savefig = pyplot_savefig
        plt.show = show
        plt.pause = lambda *a, **k: show()
        plt.switch_backend = lambda *a, **k: None
        matplotlib.use = lambda *a, **k: None

    def capture(self, fig, kwargs: dict) -> None:
        t0 = time.perf_counter()
        settings = {k: kwargs[k] for k in SAVEFIG_SETTINGS if k in kwargs}
        rgba = _savefig_rgba(fig, settings, self.max_side_px, self.size)
        rgb = fit_to_size(rgba_to_rgb_on_white(rgba, copy=False), self.size, upscale=False)
        t1 = time.perf_counter()
        self.capture_s += t1 - t0
        trace = None
        if self.tracer is not None:
            trace = _trace_now(self.tracer, fig)
            self.trace_s += time.perf_counter() - t1
        self.saved = (rgb, trace)


def _trace_now(tracer, fig) -> dict:
    """The bounded, JSON-able trace of the just drawn figure, or {"error": why}. Runs next to untrusted code,
    inside the sandbox: anything it raises (a snippet that monkeypatched matplotlib) is contained."""
    # the tracer: only trace=True children use it (prewarm preloaded it)
    from pipeline.render.trace import bound_trace, trace_figures

    if isinstance(tracer, str):
        return {"error": tracer}
    try:
        return bound_trace(trace_figures([fig], list(tracer.calls), draw=False))
    except BaseException as e:  # noqa: BLE001
        return {"error": f"tracing failed: {last_line(e)}"}


class _PixelSink:
    """The file savefig(format="rgba") writes into: Agg hands over its (H, W, 4) buffer, no encoding."""

    def __init__(self):
        self.rgba: np.ndarray | None = None

    def write(self, data) -> int:
        self.rgba = np.array(data, dtype=np.uint8, copy=True)
        return self.rgba.nbytes

    def seek(self, *args) -> int:  # matplotlib's file-handle check wants one
        return 0


def _start_tracer():
    """A ChartTracer already entered, or the error text if the tracer could not start."""
    # the tracer: only trace=True children use it (prewarm preloaded it)
    from pipeline.render.trace import ChartTracer

    try:
        return ChartTracer().__enter__()
    except BaseException as e:  # noqa: BLE001 - (the zygote-imported tracer cannot normally fail)
        return f"tracer failed to start: {last_line(e)}"


_ORIGINAL_SAVEFIG = None


def _real_savefig():
    """matplotlib's own Figure.savefig, as it was before any snippet's run replaced it (the in-process
    benchmark runs many snippets in one process)."""
    global _ORIGINAL_SAVEFIG
    if _ORIGINAL_SAVEFIG is None:
        # matplotlib: loaded by prewarm already; local for the names
        from matplotlib.figure import Figure

        _ORIGINAL_SAVEFIG = Figure.savefig
    return _ORIGINAL_SAVEFIG


def _fit_dpi(w_in: float, h_in: float, fit: tuple[int, int]) -> float:
    return max(min(fit[0] / w_in, fit[1] / h_in), MIN_DPI)


def _savefig_rgba(fig, settings: dict, max_side_px: int, fit: tuple[int, int]) -> np.ndarray:
    """The figure as `savefig(**settings)` draws it (Agg, RGBA), at the dpi that fits the saved area into
    `fit` = (W, H): sizes are in inches and points, so the dpi the code asked for only sets the resolution.
    Drawing at the final size needs no resampling afterwards and rasterises text at its final size.
    No side exceeds `max_side_px`: a huge figure is drawn at a lower dpi (not below MIN_DPI, FreeType rejects
    tiny pixel sizes), past that at a smaller size in inches, restored afterwards."""
    # matplotlib internals for clamping a figure's size: loaded by prewarm already
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.transforms import Bbox

    w_in, h_in = (float(v) for v in fig.get_size_inches())
    if not all(np.isfinite([w_in, h_in, float(fig.dpi)])) or min(w_in, h_in, float(fig.dpi)) <= 0:
        raise SnippetFailed(RenderFailure.RUNTIME_ERROR, f"invalid figure size {w_in}x{h_in} in at {fig.dpi} dpi")
    original_size = (w_in, h_in)
    dpi = _fit_dpi(w_in, h_in, fit)
    if max(w_in, h_in) * dpi > max_side_px:
        dpi = max(max_side_px / max(w_in, h_in), MIN_DPI)
        if max(w_in, h_in) * dpi > max_side_px:
            shrink = max_side_px / (max(w_in, h_in) * dpi)
            w_in, h_in = w_in * shrink, h_in * shrink
    if min(w_in, h_in) * dpi < 1:
        raise SnippetFailed(RenderFailure.OUTPUT_TOO_LARGE, f"figure aspect too extreme ({w_in}x{h_in} in)")
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # an OO Figure() has a base canvas, which cannot measure text
    resized = (w_in, h_in) != original_size
    if resized:
        fig.set_size_inches(w_in, h_in, forward=False)
    original_dpi = fig.dpi
    try:
        bbox = settings.get("bbox_inches")
        bbox = mpl.rcParams["savefig.bbox"] if bbox is None else bbox
        if isinstance(bbox, str) and bbox == "tight":
            # The area savefig would save (Figure.get_tightbbox after a layout pass, padded as print_figure
            # pads it), measured here so the dpi can be chosen for it.
            fig.dpi = dpi
            fig.draw_without_rendering()
            bbox = fig.get_tightbbox(fig.canvas.get_renderer(),
                                     bbox_extra_artists=settings.get("bbox_extra_artists"))
            pad = settings.get("pad_inches")
            engine = fig.get_layout_engine()
            if isinstance(engine, ConstrainedLayoutEngine) and pad == "layout":
                w_pad, h_pad = engine.get()["w_pad"], engine.get()["h_pad"]
            else:
                w_pad = h_pad = mpl.rcParams["savefig.pad_inches"] if pad in (None, "layout") else pad
            bbox = bbox.padded(w_pad, h_pad)
        if isinstance(bbox, Bbox):
            bw, bh = float(bbox.width), float(bbox.height)
            if not (np.isfinite([bw, bh]).all() and bw > 0 and bh > 0):
                raise SnippetFailed(RenderFailure.RUNTIME_ERROR, f"invalid saved area {bw}x{bh} in")
            dpi = _fit_dpi(bw, bh, fit)
            if max(bw, bh) * dpi > max_side_px:
                dpi = max(max_side_px / max(bw, bh), MIN_DPI)
            if max(bw, bh) * dpi > max_side_px or min(bw, bh) * dpi < 1:
                raise SnippetFailed(RenderFailure.OUTPUT_TOO_LARGE,
                                    f"saved area {bw:.3g}x{bh:.3g} in cannot be drawn within "
                                    f"render.chart.max_side_px={max_side_px} at >= {MIN_DPI:g} dpi")
        else:
            bbox = False  # not None: None would mean "rcParams' savefig.bbox" again
        sink = _PixelSink()
        _real_savefig()(fig, sink, format="rgba", dpi=dpi, bbox_inches=bbox,
                          **{k: v for k, v in settings.items() if k != "bbox_inches"})
    finally:
        fig.dpi = original_dpi
        if resized:
            fig.set_size_inches(*original_size, forward=False)
    if sink.rgba is None or sink.rgba.ndim != 3:
        raise SnippetFailed(RenderFailure.RUNTIME_ERROR, "savefig produced no pixels")
    return sink.rgba
