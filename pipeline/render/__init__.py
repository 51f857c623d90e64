"""Sandboxed rendering of model-written code (matplotlib charts, SVG, Markdown/HTML tables) to pixels.

    from pipeline.render import render
    result = render("chart", code)          # RenderResult(ok, image HxWx3 uint8, failure, detail, timings)
    result = render("chart", code, trace=True)   # ... and result.trace (texts, layout, types, colours)

`render()` keeps one lazily created renderer per kind for the whole process (fast in a loop). Long-lived
services (the Ray render pool) hold `ChartRenderer`, `SvgRenderer`, `TableRenderer` directly.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Literal

from pipeline.render.result import RenderFailure, RenderRequest, RenderResult

if TYPE_CHECKING:
    from pipeline.render.config import RenderConfig

RenderKind = Literal["chart", "table", "svg"]
RENDER_KINDS: tuple[RenderKind, ...] = ("chart", "table", "svg")

_renderers: dict[str, object] = {}
_renderers_lock = threading.Lock()
_default_config: RenderConfig | None = None


def make_renderer(kind: str, config: RenderConfig | None = None):
    """A new renderer for `kind` (caller owns it and must .close() it)."""
    if kind == "chart":
        # Each renderer is loaded on first use: the zygote imports this package, and every module it holds
        # is memory each forked child pays for.
        from pipeline.render.forkserver import ChartRenderer
        return ChartRenderer(config)
    if kind == "svg":
        # each renderer is loaded on first use (see above)
        from pipeline.render.forkserver import SvgRenderer
        return SvgRenderer(config)
    if kind == "table":
        # heavy: Playwright, only tables need it
        from pipeline.render.table import TableRenderer
        return TableRenderer(config)
    raise ValueError(f"unknown render kind {kind!r}; expected one of {RENDER_KINDS}")


def configure(config: RenderConfig) -> None:
    """Set the config used by `render()`; closes renderers created with the previous one."""
    global _default_config
    with _renderers_lock:
        _default_config = config
        _close_all_locked()


def render(kind: RenderKind, code: str, size: tuple[int, int] | None = None,
           timeout_s: float | None = None, trace: bool = False) -> RenderResult:
    """Render untrusted `code` of `kind` in the sandbox. Never raises for bad code: failures are typed.

    size=(W, H) defaults to the kind's configured size (chart 640×480, svg 336×336, table 768×768);
    timeout_s defaults to the kind's limit (chart 15 s, svg 10 s, table 10 s).
    trace=True (charts): result.trace is the ChartMimic-style trace (pipeline/render/trace.py) recorded
    inside the sandbox and validated; None for other kinds, failed renders, or a broken tracer (then
    result.detail says why).
    """
    if kind not in RENDER_KINDS:
        return RenderResult.fail(RenderFailure.INVALID_INPUT, f"unknown kind {kind!r}")
    with _renderers_lock:
        renderer = _renderers.get(kind)
        if renderer is None:
            renderer = _renderers[kind] = make_renderer(kind, _default_config)
    return renderer.render(code, size=size, timeout_s=timeout_s, trace=trace)


def close_all() -> None:
    with _renderers_lock:
        _close_all_locked()


def _close_all_locked() -> None:
    for renderer in _renderers.values():
        renderer.close()
    _renderers.clear()


atexit.register(close_all)


def __getattr__(name: str):
    # RenderConfig (pydantic) is imported on first use, not with the package: the zygote imports this package
    # and every module it holds is memory each forked child pays for (pydantic and the schemas: ~6 MB).
    if name == "RenderConfig":
        from pipeline.render.config import RenderConfig  # on first use (see above)
        return RenderConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "InProcessRenderPool",
    "RENDER_KINDS",
    "RenderConfig",
    "RenderFailure",
    "RenderRequest",
    "RenderResult",
    "close_all",
    "configure",
    "make_renderer",
    "render",
]


class InProcessRenderPool:
    """The render pool's `map` in this process (sandboxed renderers, no Ray): for command-line tools that
    render a few hundred items, e.g. `python -m pipeline.evaluate revise`."""

    def map(self, requests) -> list[RenderResult]:
        return [render(r.kind, r.code, size=r.size, timeout_s=r.timeout_s, trace=r.trace) for r in requests]
