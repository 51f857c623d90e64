"""What a render returns: pixels at a fixed size, or a typed failure, plus per-phase timings.

`RenderResult` crosses process boundaries (zygote → renderer → Ray actor → driver), so it holds only plain
data: a numpy array, an enum that is also a str, a short string and a dict of floats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class RenderFailure(str, enum.Enum):
    SYNTAX_ERROR = "syntax_error"  # the code (Python, SVG/XML) does not parse
    RUNTIME_ERROR = "runtime_error"  # it raised, died from a signal or exited without a result
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit reached
    MEMORY = "memory"  # address-space limit reached (MemoryError)
    BLANK_IMAGE = "blank_image"  # it rendered, but every pixel has the same colour
    NO_FIGURE = "no_figure"  # chart code ran but created no figure
    OUTPUT_TOO_LARGE = "output_too_large"  # file-size limit, oversized input or result
    SANDBOX_VIOLATION = "sandbox_violation"  # it tried something the sandbox forbids (file, socket, fork, ...)
    CRASHED = "crashed"  # the renderer itself (zygote, browser) died or hung; it has been restarted
    INVALID_INPUT = "invalid_input"  # unknown kind, empty code, bad size


@dataclass
class RenderRequest:
    """One snippet to render; size/timeout None → the kind's configured defaults."""

    kind: str  # "chart" | "table" | "svg"
    code: str
    size: tuple[int, int] | None = None
    timeout_s: float | None = None
    trace: bool = False  # charts: also record the ChartMimic-style trace (pipeline/render/trace.py)


@dataclass
class RenderResult:
    ok: bool
    image: np.ndarray | None = None  # HxWx3 uint8 RGB, exactly the requested size, when ok
    failure: RenderFailure | None = None  # None when ok
    detail: str = ""  # e.g. the last traceback line
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    trace: dict | None = None  # `trace_figure`'s JSON-able dict, when the request asked for it and it rendered

    @classmethod
    def success(cls, image: np.ndarray, timings: dict[str, float] | None = None) -> RenderResult:
        return cls(ok=True, image=image, timings=dict(timings or {}))

    @classmethod
    def fail(cls, failure: RenderFailure, detail: str = "", timings: dict[str, float] | None = None
             ) -> RenderResult:
        return cls(ok=False, failure=RenderFailure(failure), detail=detail[:500], timings=dict(timings or {}))

    def to_error_json(self) -> dict:
        return {"failure": self.failure.value if self.failure else None, "detail": self.detail}
