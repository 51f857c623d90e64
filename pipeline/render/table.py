"""Table kind: Markdown (markdown-it-py) or HTML → headless Chromium (Debian's) via Playwright.

Containment: JavaScript off, every request aborted, `offline`, the browser in its own empty network
namespace (`unshare --net`: a <meta refresh> reached 127.0.0.1 even with routes aborted), a scrubbed
environment, and a navigation check (a page that left about:blank is a sandbox violation and is replaced).
Speed: one browser and one page reused for many shots; the browser is relaunched every `restart_every`
shots, after a crash or a hang.

Playwright's sync API is bound to the thread that started it, so each TableRenderer owns one worker thread
and `render()` (callable from any thread) hands it jobs.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future

import numpy as np
from PIL import Image

from pipeline.render.config import RenderConfig
from pipeline.render.forkserver import SandboxUnavailableError, prepare_request
from pipeline.render.image import content_bbox, fit_to_size, is_blank
from pipeline.render.result import RenderFailure, RenderResult

log = logging.getLogger(__name__)

PAGE_TEMPLATE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
html {{ background: #fff; }}
body {{ margin: 0; padding: 8px; display: inline-block; background: #fff; color: #000;
       font-family: 'DejaVu Sans', 'Liberation Sans', sans-serif; font-size: 14px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #333; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; font-weight: bold; }}
</style></head><body>{body}</body></html>"""

_HTML_START = re.compile(r"^\s*(<!doctype|<html|<table|<div|<body|<head|<meta|<style|<p\b|<[a-z]+[\s>])", re.IGNORECASE)


def html_body(code: str) -> str:
    """HTML as is; anything else converted as (GitHub-flavoured) Markdown with tables enabled."""
    if _HTML_START.match(code):
        return code
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(code)


def to_html(code: str) -> str:
    """The page the renderer loads for a table's code."""
    return PAGE_TEMPLATE.format(body=html_body(code))


class TableRenderer:
    kind = "table"

    def __init__(self, config: RenderConfig | None = None):
        self.config = config or RenderConfig()
        self.kind_config = self.config.table
        self.layers = self._detect_layers()
        self._check_layers()
        self._jobs: queue.Queue = queue.Queue()
        self._browser_pidfile = os.path.join(tempfile.mkdtemp(prefix="render-table-"), "browser.pid")
        self._thread = threading.Thread(target=self._worker, name="table-renderer", daemon=True)
        self._started = Future()
        self._thread.start()
        self._started.result(timeout=120)  # raises if the browser cannot start
        self._closed = False
        log.info("table renderer: Chromium %s its own sandbox", "inside" if self.layers.get(
            "chromium_sandbox", "").startswith("ok") else "WITHOUT")

    # ------------------------------------------------------------------------------------------- layers
    def _detect_layers(self) -> dict[str, str]:
        layers = {"empty_env": "ok", "js_off": "ok", "requests_aborted": "ok"}
        self._unshare_args: list[str] = []
        for args in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
            try:
                done = subprocess.run([*args, "true"], capture_output=True, timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                done = e
            if getattr(done, "returncode", 1) == 0:
                self._unshare_args = args
                layers["netns"] = "ok" if args == ["unshare", "--net"] else "ok (user namespace)"
                break
        else:
            layers["netns"] = "unavailable: unshare --net failed"
        # Started as root: Chromium runs as the unprivileged sandbox uid, which also lets it use its own
        # (namespace) sandbox instead of --no-sandbox.
        self._setpriv_args: list[str] = []
        if os.getuid() == 0 and shutil.which("setpriv"):
            uid, gid = self.config.sandbox.uid, self.config.sandbox.gid
            self._setpriv_args = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                                  "--inh-caps=-all"]
            layers["uid"] = "ok"
        else:
            layers["uid"] = "unavailable: not root or no setpriv"
        if not os.access(self.kind_config.chromium_path, os.X_OK):
            raise RuntimeError(f"Chromium not found at {self.kind_config.chromium_path} (apt-get install chromium)")
        return layers

    def _check_layers(self) -> None:
        # Of the configured layers, only these apply to a browser; the rest are enforced by Chromium itself.
        required = {"empty_env", "netns", "uid"} & set(self.config.sandbox.required_layers)
        missing = {n: self.layers[n] for n in required if not self.layers[n].startswith("ok")}
        log.info("table renderer: layers active: %s", ", ".join(n for n, s in self.layers.items() if s.startswith("ok")))
        if missing and not self.config.sandbox.allow_missing_layers:
            raise SandboxUnavailableError(
                f"refusing to render untrusted tables: {missing}; set render.sandbox.allow_missing_layers=true "
                "to opt out (unsafe)")

    # -------------------------------------------------------------------------------------------- public
    def render(self, code: str, size: tuple[int, int] | None = None,
               timeout_s: float | None = None, trace: bool = False) -> RenderResult:
        """`trace` is accepted for a uniform interface; tables have no trace (always None)."""
        t0 = time.perf_counter()
        request = prepare_request(code, size, timeout_s, self.kind_config, self.kind)
        if isinstance(request, RenderResult):
            return request
        size, timeout_s = request
        job: Future = Future()
        self._jobs.put((code, size, timeout_s, job))
        try:
            # The worker enforces the limit itself; this slack only catches a wedged browser or driver.
            result = job.result(timeout=timeout_s + 15)
        except Exception:  # noqa: BLE001 - includes concurrent.futures.TimeoutError
            self._kill_browser()
            result = RenderResult.fail(RenderFailure.CRASHED, "browser did not answer; it was killed")
        result.timings["total_s"] = time.perf_counter() - t0
        return result

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            self._kill_browser()
        shutil.rmtree(os.path.dirname(self._browser_pidfile), ignore_errors=True)

    # ----------------------------------------------------------------------------------- browser thread
    def _worker(self) -> None:
        # heavy: Playwright, only the table renderer's browser thread needs it
        from playwright.sync_api import sync_playwright

        try:
            pw = sync_playwright().start()
            session = _BrowserSession(pw, self.kind_config, self._launcher(), self._browser_home(),
                                      use_chromium_sandbox=bool(self._setpriv_args))
            self.layers["chromium_sandbox"] = "ok" if session.chromium_sandbox else "unavailable (--no-sandbox)"
        except BaseException as e:  # noqa: BLE001
            self._started.set_exception(RuntimeError(f"cannot start Chromium: {e}"))
            return
        self._started.set_result(True)
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                code, size, timeout_s, job = item
                if not job.set_running_or_notify_cancel():
                    continue
                try:
                    job.set_result(session.shoot(code, size, timeout_s, self.config.blank_tolerance))
                except BaseException as e:
                    log.exception("table shot failed unexpectedly; relaunching the browser")
                    job.set_result(RenderResult.fail(RenderFailure.CRASHED, f"{type(e).__name__}: {e}"))
                    session.close()  # relaunched before the next shot
        finally:
            session.close()
            pw.stop()

    def _launcher(self) -> str:
        """A tiny executable Playwright launches instead of Chromium: records the pid (so a hung browser can
        be killed), hands the profile dir Playwright made to the sandbox uid, and execs Chromium inside a new
        network namespace as that uid (same pid all the way: no --fork)."""
        path = os.path.join(os.path.dirname(self._browser_pidfile), "chromium-netns.sh")
        chown = ""
        if self._setpriv_args:
            owner = f"{self.config.sandbox.uid}:{self.config.sandbox.gid}"
            chown = ('for a in "$@"; do case "$a" in --user-data-dir=*) '
                     f'chown -R {owner} "${{a#--user-data-dir=}}";; esac; done\n')
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho $$ > "{self._browser_pidfile}"\n{chown}'
                    f'exec {" ".join(self._unshare_args)} -- {" ".join(self._setpriv_args)} '
                    f'"{self.kind_config.chromium_path}" "$@"\n')
        os.chmod(path, 0o700)
        return path

    def _browser_home(self) -> str:
        home = os.path.join(os.path.dirname(self._browser_pidfile), "home")
        os.makedirs(home, exist_ok=True)
        if self._setpriv_args:
            os.chown(home, self.config.sandbox.uid, self.config.sandbox.gid)
        return home

    def _kill_browser(self) -> None:
        try:
            with open(self._browser_pidfile) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


class _BrowserSession:
    """One browser + one reusable page; relaunched on crash, hang, navigation or every N shots."""

    def __init__(self, pw, cfg, launcher: str, home: str, use_chromium_sandbox: bool):
        # Playwright: loaded by the browser thread already; local for the name
        from playwright.sync_api import Error as PlaywrightError

        self.pw, self.cfg, self.launcher, self.home = pw, cfg, launcher, home
        self.browser = self.page = self.cdp = None
        self.shots = 0
        self.navigated = False
        self.chromium_sandbox = use_chromium_sandbox
        try:
            self._launch()
        except PlaywrightError:
            if not self.chromium_sandbox:
                raise
            log.warning("Chromium's own sandbox failed to start here; falling back to --no-sandbox")
            self.chromium_sandbox = False
            self._launch()

    def _launch(self) -> None:
        self.close()
        w, h = self.cfg.viewport
        self.browser = self.pw.chromium.launch(
            executable_path=self.launcher, headless=True, env={"HOME": self.home, "LANG": "C.UTF-8"},
            chromium_sandbox=self.chromium_sandbox, timeout=60_000,
            args=[*([] if self.chromium_sandbox else ["--no-sandbox"]), "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking", "--disable-extensions",
                  "--font-render-hinting=none"])
        context = self.browser.new_context(java_script_enabled=False, viewport={"width": w, "height": h},
                                           device_scale_factor=1, offline=True)
        self.page = context.new_page()
        self.page.route("**/*", self._abort_request)
        self.cdp = context.new_cdp_session(self.page)
        self.shots = 0

    def _abort_request(self, route) -> None:
        """Every request is aborted; one that would replace the page (meta refresh, link target) also marks
        the shot as a sandbox violation."""
        request = route.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.navigated = True
        route.abort()

    def close(self) -> None:
        browser, self.browser = self.browser, None
        if browser is not None:
            try:
                browser.close()
            except Exception:  # noqa: BLE001 - already dead
                pass

    def shoot(self, code: str, size: tuple[int, int], timeout_s: float, blank_tolerance: int) -> RenderResult:
        # Playwright: loaded by the browser thread already; local for the names
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        # A delayed <meta refresh> from an earlier shot may have fired since: start from a clean page.
        stale = self.browser is not None and (self.navigated or _safe_url(self.page) != "about:blank")
        if stale or self.browser is None or not self.browser.is_connected() or self.shots >= self.cfg.restart_every:
            try:
                self._launch()
            except PlaywrightError as e:
                return RenderResult.fail(RenderFailure.CRASHED, f"cannot relaunch Chromium: {e}")
        self.shots += 1
        self.navigated = False
        timings = {}
        t0 = time.perf_counter()
        try:
            deadline_ms = timeout_s * 1000
            self.page.set_content(to_html(code), wait_until="load", timeout=deadline_ms)
            t1 = time.perf_counter()
            timings["layout_s"] = t1 - t0
            if self.navigated or self.page.url != "about:blank":  # <meta refresh> or similar navigated away
                self._launch()
                return RenderResult.fail(RenderFailure.SANDBOX_VIOLATION, "page navigated away", timings)
            # JS is off for the page's own scripts; Playwright's evaluate still works (separate world).
            width, height = self.page.evaluate(_PAGE_EXTENT_JS)
            max_w, max_h = self.cfg.max_page
            if width > max_w or height > max_h:
                return RenderResult.fail(
                    RenderFailure.OUTPUT_TOO_LARGE, f"table page is {width}x{height} px, over render.table.max_page "
                    f"{max_w}x{max_h}: it would be truncated", timings)
            width, height = max(1, width), max(1, height)
            # The whole page; a small one at up to max_upscale (Chromium re-rasterises it, text stays crisp).
            scale = max(1.0, min(size[0] / width, size[1] / height, self.cfg.max_upscale))
            clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}
            shot = self.cdp.send("Page.captureScreenshot", {"format": "png", "clip": clip, "optimizeForSpeed": True,
                                                            "captureBeyondViewport": True})
            timings["screenshot_s"] = time.perf_counter() - t1
        except PlaywrightTimeout:
            self._launch()
            return RenderResult.fail(RenderFailure.TIMEOUT, f"exceeded the {timeout_s:g} s limit", timings)
        except PlaywrightError as e:
            navigated = self.navigated or _safe_url(self.page) not in ("about:blank", None)
            try:
                self._launch()
            except PlaywrightError:
                self.browser = None
            if navigated:  # e.g. <meta refresh> fired between load and our measurement
                return RenderResult.fail(RenderFailure.SANDBOX_VIOLATION, "page navigated away", timings)
            return RenderResult.fail(RenderFailure.CRASHED, f"browser error: {str(e).splitlines()[0][:200]}",
                                     timings)
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))
        if is_blank(rgb, blank_tolerance):
            return RenderResult.fail(RenderFailure.BLANK_IMAGE, "the table rendered nothing visible", timings)
        top, bottom, left, right = content_bbox(rgb)
        m = round(self.cfg.crop_margin_px * scale)
        cropped = rgb[max(0, top - m):bottom + m, max(0, left - m):right + m]
        timings["postprocess_s"] = time.perf_counter() - t0 - timings["layout_s"] - timings["screenshot_s"]
        return RenderResult.success(fit_to_size(cropped, size, upscale=False), timings)


# The page's extent in CSS px: the body (inline-block, so it hugs the table) and whatever overflows it or the
# viewport (a wide unbreakable table, positioned elements).
_PAGE_EXTENT_JS = """() => {
  const b = document.body, r = b.getBoundingClientRect(), d = document.documentElement;
  const w = Math.max(r.right, r.left + b.scrollWidth, d.scrollWidth > innerWidth ? d.scrollWidth : 0);
  const h = Math.max(r.bottom, r.top + b.scrollHeight, d.scrollHeight > innerHeight ? d.scrollHeight : 0);
  return [Math.ceil(w), Math.ceil(h)];
}"""


def _safe_url(page) -> str | None:
    try:
        return page.url
    except Exception:  # noqa: BLE001 - page already gone
        return None
