"""Containment layers for one untrusted snippet, applied inside the zygote and inside each forked child.

Zygote (once, at start-up): scrubbed environment (given by the parent), its own network namespace (no
interfaces but a down loopback), and a private mount namespace that makes the interpreter readable by the
unprivileged uid while hiding the rest of a non-traversable home directory (e.g. /root), plus a small tmpfs
for the children's temp dirs (a disk quota).

Child (per snippet, after fork, before running the code), in this order:
  setsid → rlimits → unprivileged uid/gid → Landlock (read-only library paths, /dev/null writable, read-write
  temp dir only)
  → seccomp (no exec, fork, sockets, ptrace, namespaces, uid changes, memfd, signals to other processes).
The Landlock ruleset and the seccomp filter are built in the zygote before the fork (see PreparedLayers).

Every layer is also *verified* at start-up by a probe child (it tries to open a socket, read /etc/passwd,
fork, ...), so the reported layers are the ones that actually contain code on this host.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import socket
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_THREAD = 0x00010000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE = 4

# The zygote starts with exactly this environment: nothing from the caller (API keys, tokens) leaks in.
# (os.environ.clear() would not be enough: /proc/self/environ keeps the original block.)
ZYGOTE_ENV = {
    "PYTHONHASHSEED": "0",  # deterministic set/dict-of-str ordering → identical pixels across workers
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg", "LANG": "C.UTF-8",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # ctypes.util.find_library runs ldconfig (zygote only)
}
# Set by the renderer per host: a cache directory, not a secret.
ZYGOTE_ENV_EXTRA_KEYS = {"MPLCONFIGDIR"}


class SandboxSetupError(RuntimeError):
    """A layer that was available at start-up could not be applied in a child."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# ------------------------------------------------------------------------------------------------ zygote
def enter_network_namespace() -> str:
    """A new, empty network namespace: loopback down, no routes. Falls back to a user namespace."""
    if _libc.unshare(CLONE_NEWNET) == 0:
        return "ok"
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "ok (user namespace)"
    return f"unavailable: {os.strerror(ctypes.get_errno())}"


def enter_mount_namespace(read_paths: Iterable[str], staging_dir: str) -> str:
    """Private mount namespace; any non-traversable ancestor (e.g. /root, mode 700) of a path the children
    must read is replaced by an empty tmpfs into which only that path is bind-mounted back."""
    if os.getuid() != 0:
        return "unavailable: not root"
    if _libc.unshare(CLONE_NEWNS) != 0:
        return f"unavailable: {os.strerror(ctypes.get_errno())}"
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    exposed = []
    for path in read_paths:
        blocker = _first_blocking_ancestor(path)
        if blocker is None:
            continue
        inner = os.path.relpath(path, blocker).split(os.sep)[0]  # e.g. ".pyenv" under /root
        keep = os.path.join(blocker, inner)
        if keep in exposed or not os.path.isdir(keep):
            continue
        stage = os.path.join(staging_dir, f"expose{len(exposed)}")
        os.makedirs(stage, exist_ok=True)
        _check(_libc.mount(keep.encode(), stage.encode(), None, MS_BIND | MS_REC, None), f"bind {keep}")
        _check(_libc.mount(b"tmpfs", blocker.encode(), b"tmpfs", 0, b"mode=755,size=1m"), f"tmpfs {blocker}")
        os.mkdir(keep)  # mount point inside the fresh tmpfs
        _check(_libc.mount(stage.encode(), keep.encode(), None, MS_BIND | MS_REC, None), f"bind back {keep}")
        # The staging mount must go, or a later cleanup of the work root could reach the real directory.
        _check(_libc.umount2(stage.encode(), MNT_DETACH), f"unmount staging {stage}")
        os.rmdir(stage)
        exposed.append(keep)
    return "ok" + (f" (exposed {', '.join(exposed)})" if exposed else "")


def mount_workdir_quota(workroot: str, size_mb: int) -> str:
    """A size-limited tmpfs under the job dirs: RLIMIT_FSIZE caps one file, this caps them all (a snippet
    writing many files cannot fill the host's disk). Only visible inside the zygote's mount namespace."""
    ret = _libc.mount(b"tmpfs", workroot.encode(), b"tmpfs", 0, f"mode=711,size={size_mb}m".encode())
    if ret != 0:
        return f"unavailable: {os.strerror(ctypes.get_errno())}"
    return f"ok ({size_mb} MiB tmpfs)"


def unmount(path: str) -> None:
    _libc.umount2(path.encode(), MNT_DETACH)


def _first_blocking_ancestor(path: str) -> str | None:
    """The highest ancestor directory of `path` that "other" users cannot traverse, or None."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    current = "/"
    for part in parts[:-1] if os.path.isfile(path) else parts:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def preload_layer_libraries() -> None:
    """Import the Landlock/seccomp bindings in the zygote: locating libseccomp runs ldconfig, which a
    child (no exec) could not do."""
    for name in ("landlock", "pyseccomp"):
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001 - reported as an unavailable layer by the probe
            log.warning("cannot import %s: %s", name, e)


def release_free_heap() -> None:
    """Give freed malloc memory (warm-up figures) back to the kernel: glibc's malloc_trim."""
    try:
        _libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass


def library_read_paths() -> list[str]:
    """What a child may read: the interpreter, site-packages, shared libraries, fonts, and nothing else."""
    candidates = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *(m.get_data_path() for m in [sys.modules.get("matplotlib")] if m is not None),
        "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
        "/usr/share/fonts", "/usr/share/fontconfig", "/etc/fonts", "/usr/share/zoneinfo",
        "/dev/urandom",
    ]
    seen, paths = set(), []
    for p in candidates:
        real = os.path.realpath(p)
        if os.path.exists(real) and real not in seen:
            seen.add(real)
            paths.append(real)
    return paths


# ------------------------------------------------------------------------------------------------- child
@dataclass
class ChildLimits:
    address_space_bytes: int
    cpu_seconds: int
    file_size_bytes: int
    open_files: int
    max_threads: int
    uid: int
    gid: int
    read_paths: list[str] = field(default_factory=list)


@dataclass
class PreparedLayers:
    """What the zygote builds *before* forking, so each child only has to switch it on: work done in the
    child costs copy-on-write page faults, work done in the zygote does not."""

    landlock_ruleset: object = None  # landlock.Ruleset for this job (its fd is inherited by the child)
    seccomp_filter: object = None  # pyseccomp.SyscallFilter without the per-pid rules

    def fds(self) -> list[int]:
        return [self.landlock_ruleset._fd] if self.landlock_ruleset is not None else []

    def release(self) -> None:
        """In the zygote after fork: the child holds its own copy of the ruleset fd."""
        for fd in self.fds():
            os.close(fd)
        self.landlock_ruleset = None


def prepare_layers(layers: set[str], limits: ChildLimits, workdir: str,
                   seccomp_filter: object = None) -> PreparedLayers:
    prepared = PreparedLayers(seccomp_filter=seccomp_filter)
    if "landlock" in layers:
        prepared.landlock_ruleset = build_landlock_ruleset(limits.read_paths, workdir)
    if "seccomp" in layers and seccomp_filter is None:
        prepared.seccomp_filter = build_seccomp_filter()
    return prepared


def apply_child_layers(layers: set[str], limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    """Apply the requested layers, in order, to the current (freshly forked) process; raises on the first
    one that fails (the zygote then reports the snippet as CRASHED rather than run it under less)."""
    for name, fn in _CHILD_LAYERS:
        if name in layers:
            fn(limits, workdir, prepared)


def _layer_setsid(limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    os.setsid()  # own process group: the zygote kills the whole group on timeout


def _layer_rlimits(limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    def lim(which: int, value: int) -> None:
        resource.setrlimit(which, (value, value))
    lim(resource.RLIMIT_AS, limits.address_space_bytes)
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    lim(resource.RLIMIT_FSIZE, limits.file_size_bytes)
    lim(resource.RLIMIT_NOFILE, limits.open_files)
    lim(resource.RLIMIT_CORE, 0)
    lim(resource.RLIMIT_NPROC, limits.max_threads)  # ignored for uid 0, hence the uid layer
    lim(resource.RLIMIT_MEMLOCK, 0)
    lim(resource.RLIMIT_MSGQUEUE, 0)


def _layer_uid(limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    if os.getuid() != 0:
        raise SandboxSetupError("uid: not started as root, cannot switch to an unprivileged uid")
    os.setgroups([])
    os.setresgid(limits.gid, limits.gid, limits.gid)
    os.setresuid(limits.uid, limits.uid, limits.uid)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace / /proc/<pid>/mem by same-uid peers


# Devices a child may open for writing. /dev/null only: Qhull (matplotlib's automatic Delaunay triangulation
# behind triplot, tricontour, tripcolor, plot_trisurf; scipy's griddata) fopen()s it as its error stream and
# fails with "Could not open devnull" otherwise. Writing to it reveals and changes nothing.
WRITABLE_DEVICES = ("/dev/null",)


def landlock_rules(read_paths: list[str], workdir: str) -> list[tuple[str, str]]:
    """(path, access) pairs a child gets, nothing else: "read" (read files, list and execute beneath),
    "write_device" (open an existing device for reading and writing: no create, remove or ioctl) and
    "full" (its own temp dir). The one place the filesystem policy is written down (tests read it)."""
    rules = [(path, "read") for path in read_paths if path not in WRITABLE_DEVICES]
    rules += [(path, "write_device") for path in WRITABLE_DEVICES if os.path.exists(path)]
    rules.append((workdir, "full"))
    return rules


def _landlock_access(kind: str, path: str):
    from landlock import FSAccess, landlock_abi_version

    if kind == "read":
        return FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE if os.path.isdir(path) \
            else FSAccess.READ_FILE
    if kind == "write_device":  # open(..., "w") passes O_TRUNC, which ABI ≥ 3 checks separately
        return FSAccess.READ_FILE | FSAccess.WRITE_FILE | (FSAccess.TRUNCATE if landlock_abi_version() >= 3
                                                           else FSAccess(0))
    return None  # "full": every right the ruleset handles


def build_landlock_ruleset(read_paths: list[str], workdir: str):
    """Read-only access to the library paths, write access to /dev/null, full access to `workdir`, nothing
    else (built by root in the zygote, before the child drops its uid, so every path can still be opened)."""
    from landlock import Ruleset

    ruleset = Ruleset()  # handles every filesystem right this kernel's ABI knows: all denied unless allowed
    for path, kind in landlock_rules(read_paths, workdir):
        ruleset.allow(path, rules=_landlock_access(kind, path))
    return ruleset


def _layer_landlock(limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    ruleset = prepared.landlock_ruleset or build_landlock_ruleset(limits.read_paths, workdir)
    ruleset.apply()  # sets no_new_privs, then landlock_restrict_self
    os.close(ruleset._fd)


# Syscalls a chart/SVG snippet never needs; denied with EPERM (so Python raises PermissionError).
_DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_by_handle_at", "name_to_handle_at",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
    "setgroups", "capset", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "mknod", "mknodat", "acct", "quotactl", "syslog", "personality",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "kcmp", "move_pages", "migrate_pages",
    "settimeofday", "clock_settime", "sethostname", "setdomainname", "ioperm", "iopl", "vhangup",
    "fanotify_init", "memfd_create", "tkill", "setpriority", "sched_setscheduler", "sched_setattr", "mbind",
)


def build_seccomp_filter():
    """Everything but the per-process rules; built once in the zygote, loaded by each child."""
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    for name in _DENIED_SYSCALLS:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):  # syscall unknown on this architecture
            pass
    # Threads are fine (bounded by RLIMIT_NPROC/AS); new processes are not.
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes flags in memory seccomp cannot inspect: ENOSYS makes libc fall back to clone.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f


def _layer_seccomp(limits: ChildLimits, workdir: str, prepared: PreparedLayers) -> None:
    import pyseccomp as sc

    f = prepared.seccomp_filter or build_seccomp_filter()  # the child's copy-on-write copy of the zygote's
    # Signals only to itself (Python's own raise(), os.kill(os.getpid(), ...)), never to other processes.
    pid = os.getpid()
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        f.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.NE, pid))
    f.load()


_CHILD_LAYERS = (
    ("setsid", _layer_setsid), ("rlimits", _layer_rlimits), ("uid", _layer_uid),
    ("landlock", _layer_landlock), ("seccomp", _layer_seccomp),
)
CHILD_LAYER_NAMES = tuple(name for name, _ in _CHILD_LAYERS)


def probe_child_layers(limits: ChildLimits, workdir: str, secret_path: str) -> dict[str, str]:
    """Run in a throwaway forked child: apply every layer best-effort, then check each one contains
    something. `secret_path` is a world-readable file outside the allowed paths."""
    status: dict[str, str] = {}
    prepared = PreparedLayers()
    try:  # as in a real job: built while still root, before the uid switch
        prepared.landlock_ruleset = build_landlock_ruleset(limits.read_paths, workdir)
    except Exception as e:  # noqa: BLE001
        status["landlock"] = f"unavailable: {type(e).__name__}: {e}"
    for name, fn in _CHILD_LAYERS:
        if name in status:
            continue
        try:
            fn(limits, workdir, prepared)
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 - any failure means "layer unavailable"
            status[name] = f"unavailable: {type(e).__name__}: {e}"
    checks = {
        "setsid": lambda: os.getpgrp() == os.getpid(),
        "rlimits": lambda: resource.getrlimit(resource.RLIMIT_AS)[0] == limits.address_space_bytes,
        "uid": lambda: os.getuid() != 0 and os.geteuid() != 0,
        "landlock": lambda: _denied(lambda: open(secret_path).close()) and _works(
            lambda: open(os.path.join(workdir, "probe.txt"), "w").close()),
        "seccomp": lambda: _denied(lambda: socket.socket().close()) and _denied(_fork_and_reap),
    }
    for name, check in checks.items():
        if status.get(name) == "ok":
            try:
                ok = check()
            except Exception as e:  # noqa: BLE001
                ok, status[name] = False, f"unverified: {e}"
            if not ok:
                status[name] = status[name] if status[name] != "ok" else "unverified: check did not hold"
    return status


def _denied(fn) -> bool:
    try:
        fn()
    except PermissionError:
        return True
    return False


def _works(fn) -> bool:
    fn()
    return True


def _fork_and_reap() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def network_is_empty() -> bool:
    """True when this network namespace has only a loopback that nothing can reach (no interfaces up).
    (/sys/class/net would show the host's view: sysfs belongs to the namespace that mounted it.)"""
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return False
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.5).close()
    except OSError as e:
        return e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    return False


def environment_is_scrubbed() -> bool:
    with open("/proc/self/environ", "rb") as f:
        keys = {entry.split(b"=", 1)[0].decode() for entry in f.read().split(b"\0") if entry}
    return keys <= set(ZYGOTE_ENV) | ZYGOTE_ENV_EXTRA_KEYS
