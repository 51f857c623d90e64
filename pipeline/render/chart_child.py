"""Chart kind: execute matplotlib code (Agg) and capture its figure(s) as pixels.

`warm()` runs once in the zygote: import pyplot and the modules chart code usually imports, draw a
representative figure and programs like the synthetic generators' (every chart type and style sheet), resolve
common fonts, so fonts, glyph and text-layout caches are hot; then the zygote freezes the heap.
`run()` runs in each forked child: seed, neutralise show()/savefig()/backend switches, exec, draw.
"""

from __future__ import annotations

import importlib
import random
import time
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
    import matplotlib

    matplotlib.use("Agg")
    for name in (*PRELOAD, *options.get("extra_preload", ())):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional module missing only costs speed later
            pass
    import matplotlib.pyplot as plt

    # Loaded here so trace=True children find it in memory; trace=False children never touch it.
    from pipeline.evaluate import chart_trace

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
        _figure_rgba(fig, max_side_px=2048, fit=fit)
    chart_trace.bound_trace(chart_trace.trace_figures(figures, tracer.calls, draw=False))
    plt.close("all")
    if options.get("warm_generated", WARMUP_GENERATED_CHARTS):
        _warm_generated_charts(options.get("warm_generated", WARMUP_GENERATED_CHARTS), fit)
    _warm_fonts()


def _warm_generated_charts(count: int, fit: tuple[int, int]) -> None:
    """Draw the kinds of programs the synthetic data generators write (every chart type, style sheet, subplot
    grid; pipeline/data/charts.py), so lazily built state they need (style sheets, fonts at their sizes, tick
    formatters, colormaps, text layout) is in the zygote's heap instead of being rebuilt by every child."""
    import matplotlib
    import matplotlib.pyplot as plt

    try:
        from pipeline.data.charts import generate_chart
    except ImportError:  # the renderer does not depend on the data package; it only warms better with it
        return
    rng = random.Random(0)
    for _ in range(count):
        code, _ = generate_chart(rng)
        try:
            with matplotlib.rc_context():  # the programs switch style sheets
                exec(compile(code, "<warmup-generated>", "exec"), {"__name__": "__warmup__"})
                for num in plt.get_fignums():
                    _figure_rgba(plt.figure(num), max_side_px=2048, fit=fit)
        except Exception:  # noqa: BLE001 - a generator bug only costs warm-up
            pass
        finally:
            plt.close("all")


def _warm_fonts() -> None:
    """Resolve the font properties chart code commonly asks for (findfont caches per family, size, weight,
    style), so a child does not score every installed font again for a title at fontsize=13."""
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
    """Execute the snippet and capture its figure(s): (HxWx3 RGB of exactly `size`, trace or None).

    `timings` receives exec_s (the snippet itself) and capture_s (drawing, RGBA→RGB, fitting). With
    `want_trace` the plotting calls are recorded while the snippet runs and the drawn figures are traced
    (pipeline/evaluate/chart_trace.py); a snippet that breaks the tracer costs only its trace, never the
    image: the trace is then {"error": ...}, which the zygote turns into trace=None with a detail.
    """
    import matplotlib.pyplot as plt

    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    np.random.seed(0)
    random.seed(0)
    captured = _neutralise_output_calls()
    try:
        compiled = compile(code, "<chart>", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: source contains null bytes
        raise SnippetFailed(RenderFailure.SYNTAX_ERROR, f"{type(e).__name__}: {e}"[:500]) from None
    tracer = _start_tracer() if want_trace else None
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit:
        pass  # sys.exit() at the end of a script: keep what it drew
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        raise classify(e) from None
    t_exec = time.perf_counter()
    timings["exec_s"] = t_exec - t0

    figures = _unique(captured) or [plt.figure(num) for num in plt.get_fignums()]
    if not figures:
        raise SnippetFailed(RenderFailure.NO_FIGURE, "the code created no matplotlib figure")
    figures = figures[: options["max_figures"]]
    try:
        # Each figure is drawn at the dpi that fits it into `size` (see _figure_rgba), so one figure needs no
        # resampling, only white padding; several, stacked, are scaled down together.
        images = [rgba_to_rgb_on_white(_figure_rgba(fig, options["max_side_px"], fit=size), copy=False)
                  for fig in figures]
        rgb = fit_to_size(_stack_vertically(images), size, upscale=False)
    except BaseException as e:  # noqa: BLE001 - drawing bad data raises from deep inside matplotlib
        raise classify(e) from None
    t_capture = time.perf_counter()
    timings["capture_s"] = t_capture - t_exec
    trace = None
    if tracer is not None:
        trace = _finish_trace(tracer, figures)
        timings["trace_s"] = time.perf_counter() - t_capture
    return rgb, trace


def _start_tracer():
    """A ChartTracer already entered, or the error text if the tracer could not start."""
    from pipeline.evaluate.chart_trace import ChartTracer

    try:
        return ChartTracer().__enter__()
    except BaseException as e:  # noqa: BLE001 - (the zygote-imported tracer cannot normally fail)
        return f"tracer failed to start: {last_line(e)}"


def _finish_trace(tracer, figures: list) -> dict:
    """The bounded, JSON-able trace of the already drawn figures, or {"error": why}. Runs after untrusted
    code, inside the sandbox: anything it raises (a snippet that monkeypatched matplotlib) is contained."""
    from pipeline.evaluate.chart_trace import bound_trace, trace_figures

    if isinstance(tracer, str):
        return {"error": tracer}
    try:
        calls = list(tracer.calls)
        tracer.__exit__(None, None, None)
        return bound_trace(trace_figures(figures, calls, draw=False))
    except BaseException as e:  # noqa: BLE001
        return {"error": f"tracing failed: {last_line(e)}"}


def _neutralise_output_calls() -> list:
    """show()/savefig() record which figures the script meant to output instead of opening windows or
    writing files; backend switches are ignored (the child always draws with Agg)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    captured: list = []

    def savefig(self, *args, **kwargs):
        captured.append(self)

    def pyplot_savefig(*args, **kwargs):
        captured.append(plt.gcf())

    def show(*args, **kwargs):
        captured.extend(plt.figure(num) for num in plt.get_fignums())

    Figure.savefig = savefig
    plt.savefig = pyplot_savefig
    plt.show = show
    plt.pause = lambda *a, **k: show()
    plt.switch_backend = lambda *a, **k: None
    matplotlib.use = lambda *a, **k: None
    return captured


def _unique(figures: list) -> list:
    seen, out = set(), []
    for fig in figures:
        if id(fig) not in seen:
            seen.add(id(fig))
            out.append(fig)
    return out


def _figure_rgba(fig, max_side_px: int, fit: tuple[int, int] | None = None) -> np.ndarray:
    """Draw one figure with Agg, clamping figure size × dpi so no side exceeds max_side_px.

    With fit=(W, H) the figure is drawn at the dpi that makes it just fit inside W × H (the dpi the code
    asked for only sets resolution: sizes are in inches and points, so the picture is the same): no
    resampling afterwards (a Lanczos pass over an 800×600 RGBA plus four temporaries, whose fresh pages every
    forked child faults in), and text is rasterised at its final size instead of being scaled down.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    w_in, h_in = (float(v) for v in fig.get_size_inches())
    dpi = float(fig.dpi)
    if not all(np.isfinite([w_in, h_in, dpi])) or min(w_in, h_in, dpi) <= 0:
        raise SnippetFailed(RenderFailure.RUNTIME_ERROR, f"invalid figure size {w_in}x{h_in} in at {dpi} dpi")
    if fit is not None:
        dpi = max(min(fit[0] / w_in, fit[1] / h_in), MIN_DPI)
        fig.set_dpi(dpi)
    longest_px = max(w_in, h_in) * dpi
    if longest_px > max_side_px:
        # Lower the dpi first (keeps the layout), but not so far that text can no longer be rasterised;
        # past that, shrink the figure itself.
        new_dpi = max(dpi * max_side_px / longest_px, MIN_DPI)
        fig.set_dpi(new_dpi)
        if max(w_in, h_in) * new_dpi > max_side_px:
            shrink = max_side_px / (max(w_in, h_in) * new_dpi)
            w_in, h_in = w_in * shrink, h_in * shrink
            fig.set_size_inches(w_in, h_in)
    if min(w_in, h_in) * fig.dpi < 1:
        raise SnippetFailed(RenderFailure.OUTPUT_TOO_LARGE, f"figure aspect too extreme ({w_in}x{h_in} in)")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def _stack_vertically(images: list[np.ndarray]) -> np.ndarray:
    if len(images) == 1:
        return images[0]
    width = max(img.shape[1] for img in images)
    padded = [np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=255) for img in images]
    return np.concatenate(padded, axis=0)
