"""Render settings: output sizes, time limits, sandbox limits, workers per kind.

Defaults follow the Visual-ERM paper: matplotlib 15 s, SVG via cairosvg at 336×336 in 10 s, tables through
headless Chromium at ≤768 px. The lead wires this into the main config as `render:`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from pipeline.schema import Strict

SandboxLayer = Literal["empty_env", "setsid", "rlimits", "uid", "netns", "mountns", "workdir_quota", "landlock",
                       "seccomp"]
# mountns is a helper (it makes the interpreter readable for the unprivileged uid and hides the rest of a
# non-traversable home), not a containment layer on its own, so it is not required by default.
DEFAULT_REQUIRED_LAYERS: list[SandboxLayer] = [
    "empty_env", "setsid", "rlimits", "uid", "netns", "landlock", "seccomp"]


class SandboxConfig(Strict):
    # Layers that must be available, or the renderer refuses to run untrusted code.
    required_layers: list[SandboxLayer] = Field(default_factory=lambda: list(DEFAULT_REQUIRED_LAYERS))
    # Opt-out: run with whatever layers this host allows (logged loudly). Never for untrusted code in production.
    allow_missing_layers: bool = False
    # Layers not to apply even where available (debugging a snippet, testing the refusal path).
    disabled_layers: list[SandboxLayer] = Field(default_factory=list)
    uid: int = Field(65534, ge=1)  # unprivileged uid/gid the children run as (when started as root)
    gid: int = Field(65534, ge=1)
    # Extra address space a child may map on top of what the warmed zygote already uses.
    memory_mb: int = Field(1024, ge=64)
    file_size_mb: int = Field(16, ge=1)  # largest file a child may write in its temp dir
    workdir_quota_mb: int = Field(64, ge=1)  # all files of a child together (tmpfs size)
    open_files: int = Field(64, ge=16)
    # RLIMIT_NPROC for the sandbox uid: counts threads too; fork is already blocked by seccomp.
    max_threads: int = Field(64, ge=4)


class ChartConfig(Strict):
    size: tuple[int, int] = (640, 480)  # output W×H; the figure is fitted inside, aspect kept, white padding
    timeout_s: float = Field(15.0, gt=0)
    workers: int = Field(1, ge=1)  # zygotes per render actor (one per CPU given to it)
    max_side_px: int = Field(2048, ge=64)  # figure size × dpi is clamped so no side exceeds this
    # Longer code fails as output_too_large before running (real plotting scripts are a few kB).
    max_code_chars: int = Field(200_000, ge=1000)
    # Snippets importing one of these run in a second zygote that has them preloaded (started on first use),
    # so the common matplotlib+numpy zygote stays small (fork and exit cost grows with its resident size).
    heavy_modules: list[str] = Field(default_factory=lambda: ["pandas"])


class SvgConfig(Strict):
    size: tuple[int, int] = (336, 336)
    timeout_s: float = Field(10.0, gt=0)
    workers: int = Field(1, ge=1)
    # Real illustrations are large (a detailed world map is ~1.2 MB of path data). Size alone is not what
    # makes an SVG dangerous: canvas bombs are bounded by the fixed output size, entity bombs are refused by
    # the parser, <use> bombs by the time and memory limits.
    max_code_chars: int = Field(4_000_000, ge=1000)


class TableConfig(Strict):
    size: tuple[int, int] = (768, 768)  # the cropped table is fitted inside (≤768 px, as in the paper)
    viewport: tuple[int, int] = (1024, 1024)  # browser viewport the page is laid out in (its width wraps)
    # The whole page is captured up to this W×H (px); a longer or wider page fails as output_too_large (it
    # would be truncated: the critic would not see the rest). 177 rows of a typical table are ~4,500 px. A page
    # at the cap costs 2-5 s here (screenshot, decode, crop, downscale of 16 Mpx): this bounds hostile pages too.
    max_page: tuple[PositiveInt, PositiveInt] = (2048, 8192)
    # A table smaller than `size` is captured at up to this scale (re-rasterised by Chromium, so text stays
    # crisp) instead of sitting as a speck in the middle of the image; larger ones are scaled down to fit.
    max_upscale: float = Field(2.0, ge=1.0, le=8.0)
    max_code_chars: int = Field(200_000, ge=1000)  # longer inputs fail as output_too_large before running
    timeout_s: float = Field(10.0, gt=0)
    workers: int = Field(1, ge=1)  # browsers per render actor (~400 MiB each)
    restart_every: int = Field(500, ge=1)  # relaunch the browser after this many shots (leaks, state)
    chromium_path: str = "/usr/lib/chromium/chromium"  # Debian's binary; /usr/bin/chromium is a shell wrapper
    crop_margin_px: int = Field(8, ge=0)


class RenderConfig(Strict):
    chart: ChartConfig = ChartConfig()
    svg: SvgConfig = SvgConfig()
    table: TableConfig = TableConfig()
    sandbox: SandboxConfig = SandboxConfig()
    # Pixels whose spread (max - min over the whole image) is at most this count as a blank image.
    blank_tolerance: int = Field(2, ge=0, le=255)
    # Render pool: requests an actor accepts before callers wait (backpressure).
    max_inflight_per_actor: int = Field(16, ge=1)
