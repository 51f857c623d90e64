"""Renderer side of a zygote: start it, check its sandbox layers, send snippets, restart it if it dies.

`ForkServerRenderer` is what ChartRenderer and SvgRenderer are. One instance = one zygote = one snippet at a
time (about one CPU); a pool runs one per core. A zygote that dies or hangs is killed and restarted on the
next call, and the snippet that was in flight gets a CRASHED failure instead of disappearing.
"""

from __future__ import annotations

import json
import logging
import mmap
import numbers
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.render.config import RenderConfig
from pipeline.render.image import is_blank
from pipeline.render.protocol import FrameError, FrameTimeout, PeerClosed, read_frame, write_frame
from pipeline.render.result import RenderFailure, RenderResult
from pipeline.render.sandbox import ZYGOTE_ENV

log = logging.getLogger(__name__)
REPO_ROOT = str(Path(__file__).resolve().parents[2])
ZYGOTE_START_TIMEOUT_S = 120.0
# Slack on top of the snippet's own limit before the zygote itself is declared hung.
ZYGOTE_REPLY_SLACK_S = 10.0
MAX_SIDE_PX = 4096  # largest output side accepted; sizes the shared pixel buffer (pages used lazily)
PIXELS_CAPACITY = MAX_SIDE_PX * MAX_SIDE_PX * 3


class SandboxUnavailableError(RuntimeError):
    """The host cannot provide the sandbox layers the configuration requires."""


def validate_request(code: object, size: tuple[int, int], max_chars: int, kind: str = "") -> RenderResult | None:
    """A failure for inputs that must not reach a renderer at all, else None."""
    if not isinstance(code, str) or not code.strip():
        return RenderResult.fail(RenderFailure.INVALID_INPUT, "empty or non-string code")
    if len(code) > max_chars:
        return RenderResult.fail(RenderFailure.OUTPUT_TOO_LARGE, f"input too large: {len(code)} chars, over "
                                 f"the {kind or 'kind'}'s limit of {max_chars} (render.{kind}.max_code_chars)")
    try:
        w, h = size
    except (TypeError, ValueError):
        return RenderResult.fail(RenderFailure.INVALID_INPUT, f"bad output size {size!r}")
    if not (isinstance(w, numbers.Integral) and isinstance(h, numbers.Integral)
            and 16 <= w <= MAX_SIDE_PX and 16 <= h <= MAX_SIDE_PX):
        return RenderResult.fail(RenderFailure.INVALID_INPUT, f"bad output size {size!r}")
    return None


def prepare_request(code: object, size: tuple[int, int] | None, timeout_s: float | None, kind_config,
                    kind: str) -> tuple[tuple[int, int], float] | RenderResult:
    """The request's effective (size, timeout) with the kind's defaults filled in, or the failure for an input
    that must not reach a renderer at all (the kind's `max_code_chars`). Shared by every renderer's `render`."""
    size = size if size is not None else kind_config.size
    rejected = validate_request(code, size, kind_config.max_code_chars, kind)
    if rejected is not None:
        return rejected
    return (int(size[0]), int(size[1])), float(timeout_s or kind_config.timeout_s)


class ForkServerRenderer:
    kind: str = ""

    def __init__(self, config: RenderConfig | None = None):
        self.config = config or RenderConfig()
        self.kind_config = getattr(self.config, self.kind)
        self.layers: dict[str, str] = {}
        self._proc: subprocess.Popen | None = None
        self._workroot: str | None = None
        self._lock = threading.Lock()
        self._start()

    # ------------------------------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        sandbox = self.config.sandbox
        self._workroot = tempfile.mkdtemp(prefix=f"render-{self.kind}-")
        pixels_fd = os.memfd_create(f"render-{self.kind}-pixels")
        os.ftruncate(pixels_fd, PIXELS_CAPACITY)
        self._pixels = mmap.mmap(pixels_fd, PIXELS_CAPACITY)
        settings = {
            "pixels_fd": pixels_fd, "pixels_capacity": PIXELS_CAPACITY,
            "kind": self.kind, "workroot": self._workroot, "uid": sandbox.uid, "gid": sandbox.gid,
            "memory_mb": sandbox.memory_mb, "file_size_mb": sandbox.file_size_mb,
            "workdir_quota_mb": sandbox.workdir_quota_mb,
            "open_files": sandbox.open_files, "max_threads": sandbox.max_threads,
            "options": self._child_options(), "disabled_layers": list(sandbox.disabled_layers),
        }
        env = {**ZYGOTE_ENV, "MPLCONFIGDIR": _matplotlib_cache_dir()}
        launcher = f"import sys; sys.path.insert(0, {REPO_ROOT!r}); from pipeline.render.zygote import main; main()"
        self._proc = subprocess.Popen(
            [sys.executable, "-s", "-c", launcher, json.dumps(settings)], env=env, cwd=self._workroot,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, pass_fds=[pixels_fd])
        os.close(pixels_fd)  # the zygote has its own copy; our mapping stays valid
        try:
            hello, _ = read_frame(self._proc.stdout.fileno(), 0, time.monotonic() + ZYGOTE_START_TIMEOUT_S)
        except (FrameError, FrameTimeout, PeerClosed) as e:
            self._kill()
            raise RuntimeError(f"{self.kind} zygote failed to start ({type(e).__name__}); see its stderr") from e
        self.layers = hello["layers"]
        self._check_layers()

    def _child_options(self) -> dict:
        return {}

    def _check_layers(self) -> None:
        active = sorted(n for n, s in self.layers.items() if s.startswith("ok"))
        missing = {n: self.layers.get(n, "unknown") for n in self.config.sandbox.required_layers
                   if not self.layers.get(n, "").startswith("ok")}
        log.info("%s renderer: sandbox layers active: %s", self.kind, ", ".join(active))
        if not missing:
            return
        detail = "; ".join(f"{n}: {s}" for n, s in missing.items())
        if self.config.sandbox.allow_missing_layers:
            log.warning("%s renderer: running UNTRUSTED code with missing sandbox layers (%s) because "
                        "render.sandbox.allow_missing_layers is set", self.kind, detail)
            return
        self._kill()
        raise SandboxUnavailableError(
            f"refusing to render untrusted {self.kind} code: required sandbox layers unavailable ({detail}). "
            "Run as root on Linux ≥ 5.13 with Landlock and seccomp, lower render.sandbox.required_layers, "
            "or set render.sandbox.allow_missing_layers=true to opt out (unsafe).")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()  # EOF: an idle zygote cleans up its mounts and temp root, then exits
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # a busy or hung zygote, and any child it was running
            except (ProcessLookupError, PermissionError):
                pass
            proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        if self._workroot:
            shutil.rmtree(self._workroot, ignore_errors=True)
            self._workroot = None
        pixels, self._pixels = getattr(self, "_pixels", None), None
        if pixels is not None:
            pixels.close()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __del__(self):
        try:
            self._kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def zygote_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -------------------------------------------------------------------------------------------- render
    def render(self, code: str, size: tuple[int, int] | None = None,
               timeout_s: float | None = None, trace: bool = False) -> RenderResult:
        """`trace`: also return the chart trace (charts only; other kinds always give trace=None)."""
        t0 = time.perf_counter()
        request = prepare_request(code, size, timeout_s, self.kind_config, self.kind)
        if isinstance(request, RenderResult):
            return request
        size, timeout_s = request
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()
            result = self._render_locked(code, size, timeout_s, trace and self.kind == "chart")
        result.timings["total_s"] = time.perf_counter() - t0
        return result

    def _render_locked(self, code: str, size: tuple[int, int], timeout_s: float, trace: bool) -> RenderResult:
        w, h = size
        try:
            write_frame(self._proc.stdin.fileno(), {"size": [w, h], "timeout_s": timeout_s, "trace": trace},
                        code.encode())
            header, _ = read_frame(self._proc.stdout.fileno(), 0,
                                   time.monotonic() + timeout_s + ZYGOTE_REPLY_SLACK_S)
        except (OSError, FrameError, FrameTimeout, PeerClosed) as e:
            self._kill()  # restarted on the next call
            return RenderResult.fail(RenderFailure.CRASHED, f"{self.kind} zygote failed: {type(e).__name__}")
        timings = header.get("timings", {})
        if not header.get("ok"):
            return RenderResult.fail(RenderFailure(header["failure"]), header.get("detail", ""), timings)
        image = np.frombuffer(self._pixels, dtype=np.uint8, count=w * h * 3).reshape(h, w, 3).copy()
        if is_blank(image, self.config.blank_tolerance):
            return RenderResult.fail(RenderFailure.BLANK_IMAGE, "every pixel has the same colour", timings)
        result = RenderResult.success(image, timings)
        if trace:  # the zygote validated it; a missing trace comes with the reason
            result.trace, result.detail = header.get("trace"), str(header.get("detail", ""))[:500]
        return result


class ChartRenderer(ForkServerRenderer):
    """matplotlib snippets. Code that imports a heavy module (config chart.heavy_modules, e.g. pandas) is
    routed to a second zygote with that module preloaded, started on first use; everything else runs in a
    lean zygote whose forks are cheaper."""

    kind = "chart"

    def __init__(self, config: RenderConfig | None = None, extra_preload: tuple[str, ...] = ()):
        self._extra_preload = tuple(extra_preload)
        self._heavy: ChartRenderer | None = None
        super().__init__(config)
        names = "|".join(re.escape(m) for m in self.config.chart.heavy_modules) or r"(?!)"
        self._heavy_import = re.compile(rf"^\s*(?:import|from)\s+(?:{names})\b", re.MULTILINE)

    def _child_options(self) -> dict:
        return {"max_side_px": self.config.chart.max_side_px,
                "extra_preload": list(self._extra_preload), "size": list(self.config.chart.size)}

    def render(self, code: str, size: tuple[int, int] | None = None,
               timeout_s: float | None = None, trace: bool = False) -> RenderResult:
        if not self._extra_preload and isinstance(code, str) and self._heavy_import.search(code):
            if self._heavy is None:
                self._heavy = ChartRenderer(self.config, extra_preload=tuple(self.config.chart.heavy_modules))
            return self._heavy.render(code, size, timeout_s, trace)
        return super().render(code, size, timeout_s, trace)

    def close(self) -> None:
        if self._heavy is not None:
            self._heavy.close()
        super().close()


class SvgRenderer(ForkServerRenderer):
    kind = "svg"


def _matplotlib_cache_dir() -> str:
    """A persistent font cache so each zygote does not rebuild matplotlib's font list."""
    path = os.path.join(tempfile.gettempdir(), f"visual-erm-render-mpl-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
