"""The fork server: started once per renderer with a scrubbed environment, it imports and warms the
renderer for its kind, enters its own network (and mount) namespace, verifies which sandbox layers work,
freezes its heap, and then forks one confined child per snippet.

Protocol on stdin/stdout (see protocol.py): one hello frame {"layers": {...}}; then per request
{"size": [W, H], "timeout_s": s, "trace": bool} + code (UTF-8)
→ {"ok", "failure", "detail", "timings", "trace"}; on success the W*H*3 RGB bytes are in the shared pixel buffer (a memfd the renderer passed in), and "trace" is
the validated chart trace (or None, with the reason in "detail") when one was asked for.
The zygote never runs untrusted code itself and trusts nothing a child sends back beyond its validated frame.
"""

from __future__ import annotations

import gc
import json
import math
import mmap
import os
import resource
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

from pipeline.render import chart_child, sandbox, svg_child
from pipeline.render.protocol import FrameError, FrameTimeout, PeerClosed, read_frame, write_frame
from pipeline.render.result import RenderFailure
from pipeline.render.snippet import SnippetFailed, classify

KIND_MODULES = {"chart": chart_child, "svg": svg_child}
MAX_REQUEST_BYTES = 64 << 20


class Zygote:
    def __init__(self, settings: dict):
        self.kind = settings["kind"]
        self.module = KIND_MODULES[self.kind]
        self.options = settings["options"]
        self.uid, self.gid = settings["uid"], settings["gid"]
        self.workroot = settings["workroot"]  # created by the parent, owned by root
        # Pixels travel through memory shared with the renderer (a memfd it passed us), not through pipes:
        # the child writes its RGB bytes here and only a small JSON header goes over the pipes.
        self.pixels = mmap.mmap(settings["pixels_fd"], settings["pixels_capacity"])
        os.close(settings["pixels_fd"])
        self.layers: dict[str, str] = {}
        self.limits: sandbox.ChildLimits | None = None
        self._settings = settings
        self._deferred: list[tuple[int, str]] = []  # (pid, workdir) of children that already replied
        self._seccomp_filter = None

    # ----------------------------------------------------------------------------------------- start-up
    def start(self) -> dict[str, str]:
        s = self._settings
        self.layers["empty_env"] = "ok" if sandbox.environment_is_scrubbed() else "unavailable: env not empty"
        disabled = set(s.get("disabled_layers", []))
        netns = "disabled" if "netns" in disabled else sandbox.enter_network_namespace()
        self.layers["netns"] = netns if not netns.startswith("ok") or sandbox.network_is_empty() else \
            "unverified: interfaces visible"
        sandbox.preload_layer_libraries()
        self.module.warm(self.options)
        read_paths = sandbox.library_read_paths()
        try:
            self.layers["mountns"] = "disabled" if "mountns" in disabled else \
                sandbox.enter_mount_namespace(read_paths, self.workroot)
        except OSError as e:
            self.layers["mountns"] = f"unavailable: {e}"
        if self.layers["mountns"].startswith("ok"):
            self.layers["workdir_quota"] = sandbox.mount_workdir_quota(self.workroot, s["workdir_quota_mb"])
        os.chmod(self.workroot, 0o711)  # children (another uid) may enter their own job dir, not list others
        vm_now = _address_space_in_use()
        self.limits = sandbox.ChildLimits(
            address_space_bytes=vm_now + s["memory_mb"] * (1 << 20), cpu_seconds=1,
            file_size_bytes=s["file_size_mb"] * (1 << 20), open_files=s["open_files"],
            max_threads=s["max_threads"], uid=self.uid, gid=self.gid, read_paths=read_paths)
        self.layers.update(self._probe_child_layers())
        self._seccomp_filter = sandbox.build_seccomp_filter() if self.layers.get("seccomp") == "ok" else None
        for name in disabled:  # child layers: probed (so the log shows availability) but not applied
            self.layers[name] = "disabled by configuration"
        gc.collect()
        gc.freeze()  # keep the warmed heap out of GC so forked children do not copy-on-write it
        sandbox.release_free_heap()  # fewer resident pages: every fork copies, every exit tears down, less
        return self.layers

    def _probe_child_layers(self) -> dict[str, str]:
        # A world-readable file outside every allowed path: only Landlock (not file modes) can deny it.
        secret = os.path.join(self.workroot, "probe-secret")
        with open(secret, "w") as f:
            f.write("secret")
        os.chmod(secret, 0o644)
        workdir = self._new_workdir()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.chdir(workdir)
                status = sandbox.probe_child_layers(self.limits, workdir, secret)
                write_frame(w, status)
            finally:
                os._exit(0)
        os.close(w)
        try:
            status, _ = read_frame(r, 0, time.monotonic() + 30)
        except (FrameError, FrameTimeout, PeerClosed) as e:
            status = {name: f"unavailable: probe failed ({type(e).__name__})" for name in sandbox.CHILD_LAYER_NAMES}
        finally:
            os.close(r)
            _kill_and_reap(pid)
            shutil.rmtree(workdir, ignore_errors=True)
            os.unlink(secret)
        return {str(k): str(v) for k, v in status.items()}

    def _new_workdir(self) -> str:
        workdir = tempfile.mkdtemp(dir=self.workroot, prefix="job-")
        if os.getuid() == 0:
            os.chown(workdir, self.uid, self.gid)
        return workdir

    # ------------------------------------------------------------------------------------------ serving
    def serve(self, in_fd: int, out_fd: int) -> None:
        write_frame(out_fd, {"layers": self.layers, "pid": os.getpid()})
        while True:
            try:
                request, code = read_frame(in_fd, MAX_REQUEST_BYTES)
            except PeerClosed:
                return  # the renderer closed the pipe or died: nothing left to serve
            header = self.render_one(code.decode("utf-8", "replace"), tuple(request["size"]),
                                     float(request["timeout_s"]), bool(request.get("trace", False)))
            write_frame(out_fd, header)
            self._finish_deferred()

    def render_one(self, code: str, size: tuple[int, int], timeout_s: float,
                   want_trace: bool = False) -> dict:
        t0 = time.perf_counter()
        # The previous child was SIGKILLed before its reply went out; wait until it is really gone so it
        # cannot touch the shared pixel buffer or the temp-dir quota of this one.
        self._finish_deferred(block=True)
        active = {name for name, status in self.layers.items() if status.startswith("ok")}
        self.limits.cpu_seconds = math.ceil(timeout_s) + 1
        workdir = self._new_workdir()
        try:
            prepared = sandbox.prepare_layers(active, self.limits, workdir, self._seccomp_filter)
        except Exception as e:  # noqa: BLE001 - never run a snippet under fewer layers than probed
            shutil.rmtree(workdir, ignore_errors=True)
            return _failure(RenderFailure.CRASHED, f"sandbox preparation failed: {e}")
        expected = size[0] * size[1] * 3
        # Wipe the previous render's pixels: a child that forges an "ok" reply on the result pipe (instead of
        # drawing) must get a blank image, not the last snippet's (say, the reference it is compared with).
        np.frombuffer(self.pixels, dtype=np.uint8, count=expected)[:] = 0
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # ---- child: never returns
            os.close(r)
            self._child(w, code, size, workdir, active, prepared, want_trace)
        os.close(w)
        prepared.release()
        t_forked = time.perf_counter()
        try:
            header, _ = read_frame(r, 0, time.monotonic() + timeout_s)
            header = _validate_child_reply(header, expected, want_trace)
        except FrameTimeout:
            header = _failure(RenderFailure.TIMEOUT, f"exceeded the {timeout_s:g} s wall-clock limit")
        except (FrameError, TypeError, ValueError, AttributeError, OverflowError) as e:
            # Only code that tampered with the result pipe produces a malformed frame (OverflowError: a
            # timing sent as a 400-digit integer).
            header = _failure(RenderFailure.SANDBOX_VIOLATION, f"invalid result from child: {e}"[:300])
        except PeerClosed:
            header = None
        finally:
            os.close(r)
        if header is None:  # died (or exited) without sending a result: its exit status says why
            status, rusage = _kill_and_reap(pid)
            header = _classify_exit(status, rusage, self.limits.cpu_seconds)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            # Killed before the reply goes out, so it can no longer touch the shared pixels; reaped (a slow
            # teardown of the forked heap) after the reply, overlapping with the renderer's own work.
            _kill_group(pid)
            self._deferred.append((pid, workdir))
        timings = header.setdefault("timings", {})
        timings.update(fork_s=t_forked - t0, zygote_s=time.perf_counter() - t0)
        return header

    def remove_workroot(self) -> None:
        """On exit: the renderer may be gone (a killed Ray actor), so clean up our own temp root. Job dirs
        are removed one by one and the rest only with rmdir, so this root-owned cleanup can never walk into
        a mount point (a bind-mounted interpreter directory, say)."""
        self._finish_deferred(block=True)
        sandbox.unmount(self.workroot)  # the quota tmpfs, if any (only mounted in our namespace)
        try:
            entries = os.listdir(self.workroot)
        except OSError:
            return
        for name in entries:
            path = os.path.join(self.workroot, name)
            if name.startswith("job-") and not os.path.ismount(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.rmdir(path) if os.path.isdir(path) else os.unlink(path)
                except OSError:
                    pass
        try:
            os.rmdir(self.workroot)
        except OSError:
            pass

    def _finish_deferred(self, block: bool = False) -> None:
        """Kill and reap children that already replied, without waiting for their teardown (unmapping a
        forked heap takes milliseconds) unless `block`; their temp dirs go once they are reaped."""
        still_running = []
        for pid, workdir in self._deferred:
            _kill_group(pid)
            reaped, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            if reaped:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                still_running.append((pid, workdir))
        self._deferred = still_running

    def _child(self, result_fd: int, code: str, size: tuple[int, int], workdir: str, layers: set[str],
               prepared: sandbox.PreparedLayers, want_trace: bool) -> None:
        t0 = time.perf_counter()
        try:
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):  # the renderer's pipes are fds 0/1: the snippet must not reach them
                os.dup2(devnull, fd)
            _close_fds_except([result_fd, *prepared.fds()])
            os.chdir(workdir)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sandbox.apply_child_layers(layers, self.limits, workdir, prepared)  # closes the ruleset fd
            os.environ.update(HOME=workdir, TMPDIR=workdir)
            tempfile.tempdir = workdir
        except BaseException as e:  # noqa: BLE001
            _write_and_exit(result_fd, _failure(RenderFailure.CRASHED, f"sandbox setup failed: {e}"))
        t_setup = time.perf_counter()
        gc.set_threshold(50_000, 50, 50)  # a short-lived process: collect rarely (memory is capped anyway)
        run_timings: dict[str, float] = {}
        try:
            rgb, trace = self.module.run(code, size, self.options, run_timings, want_trace)
            t_run = time.perf_counter()
            np.frombuffer(self.pixels, dtype=np.uint8, count=rgb.nbytes)[:] = rgb.reshape(-1)
            run_timings["copy_s"] = time.perf_counter() - t_run
            header = {"ok": True, "nbytes": rgb.nbytes, "trace": trace}
        except SnippetFailed as f:
            header = _failure(f.failure, f.detail)
        except BaseException as e:  # noqa: BLE001
            f = classify(e)
            header = _failure(f.failure, f.detail)
        header["timings"] = {**run_timings, "sandbox_s": t_setup - t0, "run_s": time.perf_counter() - t_setup}
        _write_and_exit(result_fd, header)


def _close_fds_except(keep: list[int]) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _write_and_exit(fd: int, header: dict) -> None:
    try:
        write_frame(fd, header)
    finally:
        os._exit(0)


def _failure(failure: RenderFailure, detail: str) -> dict:
    return {"ok": False, "failure": failure.value, "detail": detail[:500]}


def _validate_child_reply(header: dict, expected: int, want_trace: bool = False) -> dict:
    """Accept only the fields we asked for, with the right types and sizes."""
    timings = header.get("timings")
    clean_timings = {str(k)[:32]: float(v) for k, v in list(timings.items())[:32]
                     if isinstance(v, (int, float))} if isinstance(timings, dict) else {}
    if header.get("ok") is True:
        if header.get("nbytes") != expected:
            raise FrameError(f"expected {expected} bytes of pixels, got {str(header.get('nbytes'))[:20]}")
        trace, detail = _validate_trace(header.get("trace")) if want_trace else (None, "")
        return {"ok": True, "timings": clean_timings, "trace": trace, "detail": detail}
    failure = header.get("failure")
    if failure not in {f.value for f in RenderFailure}:
        raise FrameError(f"unknown failure {str(failure)[:50]!r}")
    return {**_failure(RenderFailure(failure), str(header.get("detail", ""))), "timings": clean_timings}


def _validate_trace(trace: object) -> tuple[dict | None, str]:
    """(trace, "") for a well-formed chart trace from the child, else (None, why). The trace is computed next
    to untrusted code, which can write anything into it or the pipe: only `validate_trace`'s shape passes."""
    # the tracer: only trace=True requests validate a trace
    from pipeline.render.trace import InvalidTrace, validate_trace

    if trace is None:
        return None, "no trace: the child sent none"
    if type(trace) is dict and set(trace) == {"error"}:  # the child's own report of a broken tracer
        return None, f"no trace: {str(trace['error'])[:300]}"
    try:
        return validate_trace(trace), ""
    except Exception as e:  # noqa: BLE001 - InvalidTrace, or anything else odd about it: rejected, never a crash
        reason = str(e) if isinstance(e, InvalidTrace) else type(e).__name__
        return None, f"trace rejected: {reason}"[:300]


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group (it called setsid) and the child itself."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _kill_and_reap(pid: int) -> tuple[int, object]:
    _kill_group(pid)
    _, status, rusage = os.wait4(pid, 0)
    return status, rusage


def _classify_exit(status: int, rusage, cpu_limit_s: int) -> dict:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        cpu = rusage.ru_utime + rusage.ru_stime
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cpu_limit_s - 0.05):
            return _failure(RenderFailure.TIMEOUT, f"exceeded the CPU-time limit ({cpu:.1f} s)")
        if sig == signal.SIGXFSZ:
            return _failure(RenderFailure.OUTPUT_TOO_LARGE, "exceeded the file-size limit")
        if sig == signal.SIGSYS:
            return _failure(RenderFailure.SANDBOX_VIOLATION, "forbidden system call")
        return _failure(RenderFailure.RUNTIME_ERROR, f"killed by {name}")
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return _failure(RenderFailure.RUNTIME_ERROR, f"exited with status {code} before producing an image")


def _address_space_in_use() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return resource.getrlimit(resource.RLIMIT_AS)[0]


def main() -> None:
    settings = json.loads(sys.argv[1])
    # The renderer's stdin/stdout are the protocol pipes; keep Python's text streams off them.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints (from libraries) go to stderr, not into the protocol
    zygote = Zygote(settings)
    try:
        zygote.start()
        zygote.serve(in_fd, out_fd)
    finally:
        zygote.remove_workroot()


if __name__ == "__main__":
    main()
