"""What the driver's console shows: at a terminal one live bar per phase and one line per step; without one
(`ray job submit` logs, `kubectl logs`, a file) a progress line every few seconds instead of one per tick;
and none of the warnings nobody running this pipeline can act on.

    from pipeline import console
    policy = console.setup(cfg.logging.progress)   # first thing in the driver, before heavy imports

`setup()` acts at three levels, because the noise comes from three places:
* this process: warning filters (`KNOWN_WARNINGS`) and tqdm's default refresh interval;
* the processes it starts (Ray workers of a local cluster, the critic-SFT subprocess, the render zygotes):
  the same, through environment variables they inherit (`PYTHONWARNINGS`, `TQDM_MININTERVAL`); for workers
  on a remote cluster, which inherit nothing from the driver, `worker_env()` is what to put into the
  job's `runtime_env["env_vars"]`;
* what reaches the console anyway, including worker output that Ray forwards to the driver and library
  `print()`s no warning filter sees: `sys.stdout`/`sys.stderr` are wrapped so that lines matching
  `KNOWN_LINES` are dropped and, without a terminal, each progress-bar refresh is a line of its own (tqdm
  redraws with `\\r`, which glues every refresh and the next log line into one line of a log file).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass, field
from functools import partialmethod
from typing import Optional, TextIO

DEFAULT_INTERVAL_S = 10.0  # seconds between two progress lines without a terminal


@dataclass(frozen=True)
class KnownWarning:
    """A Python warning filtered in every process; `why` says why nobody can act on it."""

    module: str  # the module the warning is attributed to (exact name)
    category: type[Warning]
    message: str  # regex the message starts with (this process); PYTHONWARNINGS filters by module only
    why: str

    @property
    def env_filter(self) -> str:
        # -W / PYTHONWARNINGS syntax: action:message:category:module (message and module taken literally)
        return f"ignore::{self.category.__name__}:{self.module}"


KNOWN_WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning("verl.workers.engine", UserWarning, r"\w+ engine is not available",
                 "verl 0.9.1 imports each optional training engine (torchtitan, veomni, automodel, "
                 "mindspeed, megatron) and warns for every one not installed; we train with its FSDP engine"),
)

# Console lines dropped wherever they come from (a worker line forwarded by Ray carries a "(Actor pid=N) "
# prefix, so these are searched, not matched).
KNOWN_LINES: tuple[tuple[str, str], ...] = (
    (r"Warning: (Failed to set NUMA affinity|pynvml not available, skipping NUMA affinity)",
     "verl's set_numa_affinity() print()s this on every trainer rank of a machine without libnuma or "
     "pynvml (CPU machines, most containers): NUMA pinning only exists for NVIDIA GPUs"),
    (r"UserWarning: \w+ engine is not available: ModuleNotFoundError",
     "the optional-engine warning above, forwarded from a worker that did not inherit PYTHONWARNINGS"),
    (r"warnings\.warn\(f\"\w+ engine is not available",
     "the source line Python prints under that warning"),
    (r"is_fx_tracing will return true for both fx\.symbolic_trace and torch\.export",
     "torch 2.13 logs this once per process when a library calls torch.fx's is_fx_tracing()"),
    (r"\[real_accelerator\.py:\d+:get_accelerator\] Setting accelerator to CPU",
     "DeepSpeed saying it found no GPU, on machines that have none (tiny critic SFT)"),
)
_NOISE = re.compile("|".join(f"(?:{p})" for p, _ in KNOWN_LINES))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_PREFIX = re.compile(r"\([^()]*pid=[^()]*\) ")  # how Ray prefixes a worker's forwarded lines


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(_ANSI.sub("", line)))


def quiet_known_warnings() -> None:
    """This process's warning filters (idempotent); a worker that did not inherit them can call this."""
    for w in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=w.message, category=w.category, module=re.escape(w.module))


def worker_env(interval_s: float = DEFAULT_INTERVAL_S, base: Optional[dict] = None) -> dict[str, str]:
    """Environment for processes started by us or by Ray: the warning filters (added to any the user set) and
    tqdm's refresh interval (a worker's output goes to a log file, never to a terminal)."""
    base = os.environ if base is None else base
    filters = [f for f in (base.get("PYTHONWARNINGS") or "").split(",") if f]
    filters += [w.env_filter for w in KNOWN_WARNINGS if w.env_filter not in filters]
    return {"PYTHONWARNINGS": ",".join(filters), "TQDM_MININTERVAL": f"{interval_s:g}",
            "TQDM_MAXINTERVAL": f"{max(interval_s, 10.0):g}"}


class FilteredStream:
    """A text stream that drops known noise lines and, when `lines` is set (no terminal), shows a `\r`
    redraw as a line of its own. Partial text is held until its line ends or the writer flushes (tqdm
    flushes after every redraw, so a live bar stays live). Redraws nobody flushed in between (a worker's
    bar that Ray forwards as one line) were never meant to be seen: only their last state is kept."""

    def __init__(self, target: TextIO, lines: bool):
        self.target = target
        self.lines = lines
        self._pending = ""
        self._ended_by_us = False  # a flush ended the last line: swallow the newline that follows
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            while "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                if line == "" and self._ended_by_us:  # tqdm's closing newline after its last redraw
                    self._ended_by_us = False
                    continue
                self._emit(self._last_state(line) if self.lines else line)
        return len(text)

    @staticmethod
    def _last_state(line: str) -> str:
        """The last redraw of a `\r`-separated line, keeping a Ray "(Actor pid=N) " prefix of the first."""
        if "\r" not in line:
            return line
        segments = [seg for seg in line.split("\r") if seg.strip()]
        if not segments:
            return ""
        prefix = _RAY_PREFIX.match(_ANSI.sub("", line))
        last = segments[-1].rstrip()
        return f"{prefix.group(0)}{last}" if prefix and len(segments) > 1 else last

    def _emit(self, line: str) -> None:
        if not is_noise(line):
            self._ended_by_us = False
            self.target.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                text, self._pending = self._pending, ""
                if self.lines:  # a bar's current state becomes a line
                    state = self._last_state(text)
                    if state.strip():
                        self._emit(state)
                        self._ended_by_us = True
                else:  # a terminal: show the partial line now (a live bar), unfiltered
                    self._ended_by_us = False
                    self.target.write(text)
            self.target.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, buffer, ... of the wrapped stream
        return getattr(self.target, name)


@dataclass
class ConsolePolicy:
    """What `setup` did, so that `restore()` undoes it (tests; a process that runs several drivers)."""

    tty: bool  # live bars (a terminal, or logging.progress=bar)
    interval_s: float
    env: dict[str, str]  # what was set in os.environ for child processes
    _saved_env: dict[str, Optional[str]] = field(default_factory=dict, repr=False)
    _saved_streams: tuple = field(default=(), repr=False)
    _saved_tqdm: Optional[object] = field(default=None, repr=False)
    _saved_filters: list = field(default_factory=list, repr=False)

    def restore(self) -> None:
        global _active
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, FilteredStream):
                stream.flush()
        if self._saved_streams:
            sys.stdout, sys.stderr = self._saved_streams
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._saved_tqdm is not None:
            import tqdm.std

            tqdm.std.tqdm.__init__ = self._saved_tqdm
        warnings.filters[:] = self._saved_filters
        getattr(warnings, "_filters_mutated", lambda: None)()  # drop the warning registries' cached decisions
        _active = None


_active: Optional[ConsolePolicy] = None


def setup(progress: str = "auto", interval_s: float = DEFAULT_INTERVAL_S, wrap_streams: bool = True
          ) -> ConsolePolicy:
    """Apply the console policy to this process and the ones it starts. `progress` is `logging.progress`:
    "auto" (live bars when stderr is a terminal), "bar" (always), "line" (never: rate-limited lines)."""
    global _active
    if progress not in ("auto", "bar", "line"):
        raise ValueError(f"progress must be auto, bar or line, got {progress!r}")
    if _active is not None:
        _active.restore()
    tty = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
    env = worker_env(interval_s)
    if tty:  # this process draws live bars; its children's output still goes to files (and stays limited
        # by Ray forwarding whole lines only)
        env = {"PYTHONWARNINGS": env["PYTHONWARNINGS"]}
    policy = ConsolePolicy(tty=tty, interval_s=interval_s, env=env, _saved_filters=list(warnings.filters))
    for key, value in env.items():
        policy._saved_env[key] = os.environ.get(key)
        os.environ[key] = value
    quiet_known_warnings()
    if not tty:
        policy._saved_tqdm = _set_tqdm_interval(interval_s)
    if wrap_streams:
        policy._saved_streams = (sys.stdout, sys.stderr)
        sys.stdout = FilteredStream(_unwrapped(sys.stdout), lines=not tty)
        sys.stderr = FilteredStream(_unwrapped(sys.stderr), lines=not tty)
    _active = policy
    return policy


def _unwrapped(stream):
    return stream.target if isinstance(stream, FilteredStream) else stream


def _set_tqdm_interval(interval_s: float) -> Optional[object]:
    """tqdm reads TQDM_* variables once, when it is imported; if it already was, change its defaults in
    place (explicit `mininterval=` arguments still win). Returns the previous `__init__`, or None."""
    module = sys.modules.get("tqdm.std")
    if module is None:
        return None  # the environment variables set by setup() take effect at import
    init = module.tqdm.__dict__["__init__"]
    func, keywords = (init.func, dict(init.keywords)) if isinstance(init, partialmethod) else (init, {})
    keywords.update(mininterval=interval_s, maxinterval=max(interval_s, 10.0))
    module.tqdm.__init__ = partialmethod(func, **keywords)
    return init
