"""Hostile inputs for every render kind: each must be contained, return the right typed failure, and leave
the renderer serving. Canary files sit in world-writable / world-readable places on purpose, so only the
sandbox (Landlock, seccomp, namespaces) — not ordinary file permissions — stands between the code and them.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import tempfile
import threading

import numpy as np
import pytest
from PIL import Image

from pipeline.render import RenderConfig, RenderFailure
from pipeline.render.forkserver import ChartRenderer, SvgRenderer
from pipeline.render.table import TableRenderer

F = RenderFailure
SECRET = "hunter2-render-secret"
SHORT = 2.0  # seconds: limit for cases expected to hang
NORMAL = 15.0  # seconds: limit for everything else (the box may be busy with other test runs)


class _Canaries:
    """Files the snippets try to reach: a world-writable dir with a file, a red 'reference image'."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="render-canary-")
        os.chmod(self.root, 0o777)
        self.victim_dir = os.path.join(self.root, "victim")
        os.mkdir(self.victim_dir)
        os.chmod(self.victim_dir, 0o777)
        self.victim_file = os.path.join(self.victim_dir, "keep.txt")
        with open(self.victim_file, "w") as f:
            f.write("keep")
        os.chmod(self.victim_file, 0o666)
        self.reference = os.path.join(self.root, "reference.png")
        Image.fromarray(np.full((64, 64, 3), (255, 0, 0), np.uint8)).save(self.reference)
        os.chmod(self.reference, 0o644)
        self.escape_file = os.path.join(self.root, "escaped.txt")

    def intact(self) -> bool:
        return (os.path.exists(self.victim_file) and open(self.victim_file).read() == "keep"
                and not os.path.exists(self.escape_file))


class _HitCounter(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"pwned")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def canaries():
    c = _Canaries()
    yield c
    shutil.rmtree(c.root, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """A local HTTP server; no snippet may ever reach it."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HitCounter)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def renderers():
    os.environ["VISUAL_ERM_TEST_SECRET"] = SECRET  # in the parent's environment while zygotes start
    cfg = RenderConfig()
    made = {"chart": ChartRenderer(cfg), "svg": SvgRenderer(cfg), "table": TableRenderer(cfg)}
    yield made
    os.environ.pop("VISUAL_ERM_TEST_SECRET", None)
    for r in made.values():
        r.close()


def chart_cases(c: _Canaries, url: str):
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
    return [
        ("infinite loop", "while True:\n    pass", {F.TIMEOUT}),
        ("sleep forever", "import time\ntime.sleep(1000)", {F.TIMEOUT}),
        ("memory bomb bytes", "x = bytearray(64 * 1024 ** 3)", {F.MEMORY}),
        ("memory bomb growing", "a = []\nwhile True:\n    a.append(' ' * 10 ** 7)", {F.MEMORY}),
        ("numpy bomb", "import numpy as np\nnp.ones((100000, 100000))", {F.MEMORY}),
        ("fork bomb", "import os\nwhile True:\n    os.fork()", {F.SANDBOX_VIOLATION}),
        ("subprocess", "import subprocess\nsubprocess.run(['touch', %r])" % c.escape_file, {F.SANDBOX_VIOLATION}),
        ("os.system", plot + "import os\nassert os.system('touch %s') != 0\nraise SystemExit" % c.escape_file,
         {None}),  # system() cannot fork: it returns an error code; the plot still renders
        ("rm -rf", "import shutil\nshutil.rmtree(%r)" % c.victim_dir, {F.SANDBOX_VIOLATION}),
        ("overwrite file", "open(%r, 'w').write('gone')" % c.victim_file, {F.SANDBOX_VIOLATION}),
        ("write outside", "open(%r, 'w').write('x')" % c.escape_file, {F.SANDBOX_VIOLATION}),
        ("read /etc/passwd", "print(open('/etc/passwd').read())", {F.SANDBOX_VIOLATION}),
        ("read reference image", "import matplotlib.pyplot as plt\nplt.imshow(plt.imread(%r))" % c.reference,
         {F.SANDBOX_VIOLATION}),
        ("list /", "import os\nos.listdir('/')", {F.SANDBOX_VIOLATION}),
        ("read repo source", "open(%r).read()" % os.path.abspath(__file__), {F.SANDBOX_VIOLATION}),
        ("proc environ of pid 1", "open('/proc/1/environ').read()", {F.SANDBOX_VIOLATION}),
        ("env secret", "import os\nraise RuntimeError('LEAKED' if %r in str(dict(os.environ)) else 'clean')"
         % SECRET, {F.RUNTIME_ERROR}),
        ("proc self environ", "open('/proc/self/environ').read()", {F.SANDBOX_VIOLATION}),
        ("socket connect", "import socket\nsocket.create_connection(('127.0.0.1', %s))" % url.rsplit(":", 1)[1],
         {F.SANDBOX_VIOLATION}),
        ("urllib fetch", "import urllib.request\nurllib.request.urlopen(%r)" % url, {F.SANDBOX_VIOLATION}),
        ("kill parent", "import os\nos.kill(os.getppid(), 9)", {F.SANDBOX_VIOLATION}),
        ("kill everything", "import os\nos.kill(-1, 9)", {F.SANDBOX_VIOLATION}),
        ("ptrace via ctypes", "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                              "assert libc.ptrace(16, os.getppid(), 0, 0) == -1\nraise PermissionError(1, 'denied')",
         {F.SANDBOX_VIOLATION}),
        ("SIGSEGV self", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", {F.RUNTIME_ERROR}),
        ("SIGSTOP self", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)", {F.TIMEOUT}),
        ("ignore SIGTERM and spin", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                    "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass", {F.TIMEOUT}),
        ("null deref", "import ctypes\nctypes.string_at(0)", {F.RUNTIME_ERROR}),
        ("thread bomb", "import threading, time\nwhile True:\n"
                        "    threading.Thread(target=time.sleep, args=(100,)).start()", {F.MEMORY}),
        ("sys.exit before plotting", "import sys\nsys.exit(0)", {F.NO_FIGURE}),
        ("os._exit", "import os\nos._exit(0)", {F.RUNTIME_ERROR}),
        ("huge file", "open('big.bin', 'wb').write(b'0' * (200 * 2 ** 20))", {F.OUTPUT_TOO_LARGE}),
        ("disk filler", "for i in range(1000):\n    open(f'f{i}.bin', 'wb').write(b'0' * (8 * 2 ** 20))",
         {F.OUTPUT_TOO_LARGE}),
        ("memfd", "import os\nos.memfd_create('x')", {F.SANDBOX_VIOLATION}),
        ("tamper result pipe", "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'garbage' * 100)\n"
                               "    except OSError: pass", {F.SANDBOX_VIOLATION}),
        ("forged nested header", "import os, struct\nh = b'[' * 500000 + b']' * 500000\nfor fd in range(3, 64):\n"
                                 "    try: os.write(fd, struct.pack('!II', len(h), 0) + h)\n    except OSError: pass",
         {F.SANDBOX_VIOLATION}),
        ("forged success header", "import os, struct\nh = b'{\"ok\": true, \"nbytes\": 7}'\nfor fd in range(3, 64):\n"
                                  "    try: os.write(fd, struct.pack('!II', len(h), 0) + h)\n    except OSError: pass",
         {F.SANDBOX_VIOLATION}),
        ("recursion", "def f():\n    f()\nf()", {F.RUNTIME_ERROR}),
        ("syntax error", "plt.plot([1, 2]", {F.SYNTAX_ERROR}),
        ("null bytes", "x = 1\x00", {F.SYNTAX_ERROR}),
        ("runtime error", "1 / 0", {F.RUNTIME_ERROR}),
        ("no figure", "x = sum(range(10))", {F.NO_FIGURE}),
        ("blank figure", "import matplotlib.pyplot as plt\nplt.figure()\nplt.axis('off')", {F.BLANK_IMAGE}),
        ("giant figure is clamped", "import matplotlib.pyplot as plt\nplt.figure(figsize=(1000, 1000), dpi=1000)\n"
                                    "plt.plot([1, 2])", {None}),
        ("backend switch + show", "import matplotlib\nmatplotlib.use('TkAgg')\n" + plot + "plt.show()", {None}),
        ("savefig elsewhere", plot + "plt.savefig(%r)" % c.escape_file, {None}),
    ]


def svg_cases(c: _Canaries, url: str):
    svg = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
    nested = "".join(f'<g id="a{i}">' + f'<use xlink:href="#a{i - 1}"/>' * 4 + "</g>" for i in range(1, 16))
    return [
        ("XXE", f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                f'<svg {svg}><text y="20">&x;</text></svg>', {F.SANDBOX_VIOLATION}),
        ("billion laughs", '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
                           f'<!ENTITY c "&b;&b;&b;&b;&b;&b;">]><svg {svg}><text>&c;</text></svg>',
         {F.SANDBOX_VIOLATION}),
        ("external DTD", f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "{url}/dtd"><svg {svg}><rect width="5" '
                         'height="5"/></svg>', {F.SANDBOX_VIOLATION, None}),
        ("href to reference file", f'<svg {svg} width="64" height="64"><image xlink:href="file://{c.reference}" '
                                   'width="64" height="64"/></svg>', {F.BLANK_IMAGE}),
        ("href to network", f'<svg {svg} width="64" height="64"><image xlink:href="{url}/img.png" width="64" '
                            'height="64"/></svg>', {F.BLANK_IMAGE}),
        ("css import", f'<svg {svg} width="64" height="64"><style>@import url("file://{c.reference}");</style>'
                       '</svg>', {F.BLANK_IMAGE}),
        ("canvas bomb", f'<svg {svg} width="100000000" height="100000000"><rect width="50000000" '
                        'height="50000000" fill="blue"/></svg>', {None}),
        ("use bomb", f'<svg {svg} width="100" height="100"><defs><g id="a0"><rect width="1" height="1"/></g>'
                     f'{nested}</defs><use xlink:href="#a15"/></svg>', {F.TIMEOUT, F.MEMORY}),
        ("self-referencing use", f'<svg {svg}><g id="x"><use xlink:href="#x"/></g></svg>', {F.RUNTIME_ERROR}),
        ("malformed XML", "<svg><rect></svg>", {F.SYNTAX_ERROR}),
        ("not SVG at all", "print('hello')", {F.SYNTAX_ERROR}),
        ("empty drawing", f"<svg {svg}></svg>", {F.BLANK_IMAGE}),
    ]


def table_cases(c: _Canaries, url: str):
    table = "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
    return [
        ("meta refresh to network", f'<meta http-equiv="refresh" content="0;url={url}/refresh">{table}',
         {F.SANDBOX_VIOLATION, None}),
        ("meta refresh to reference", f'<meta http-equiv="refresh" content="0;url=file://{c.reference}">{table}',
         {F.SANDBOX_VIOLATION, None}),
        ("fetch via script", f"<script>fetch('{url}/fetch')</script>{table}", {None}),
        ("iframe to network", f'<iframe src="{url}/iframe"></iframe>{table}', {None}),
        ("iframe to file", f'<iframe src="file://{c.reference}" width="300" height="300"></iframe>{table}', {None}),
        ("img of reference", f'<img src="file://{c.reference}" width="300" height="300">{table}', {None}),
        ("css background from network", f'<div style="background:url({url}/bg);width:50px;height:50px"></div>'
                                        f'{table}', {None}),
        ("giant element", '<div style="width:100000px;height:100000px;background:#00f"></div>', {F.OUTPUT_TOO_LARGE}),  # would be truncated at render.table.max_page
        ("empty markup", "<p></p>", {F.BLANK_IMAGE}),
        ("oversized input", "| a |\n|---|\n" + "| x |\n" * 100_000, {F.OUTPUT_TOO_LARGE}),
        ("markdown with script", "| a | b |\n|---|---|\n| <script>alert(1)</script> | 2 |", {None}),
    ]


def _check(renderers, kind, code, expected):
    renderer = renderers[kind]
    timeout = SHORT if F.TIMEOUT in expected else NORMAL
    pid_before = getattr(renderer, "zygote_pid", None)
    result = renderer.render(code, timeout_s=timeout)
    got = result.failure
    assert got in expected, f"{kind}: expected {expected}, got {got} ({result.detail})"
    if result.ok:
        h, w = renderer.kind_config.size[1], renderer.kind_config.size[0]
        assert result.image.shape == (h, w, 3) and result.image.dtype == np.uint8
        # Nothing reference-red may appear: the reference image (pure red) was never loaded.
        red = (result.image[..., 0] > 200) & (result.image[..., 1] < 60) & (result.image[..., 2] < 60)
        assert red.sum() < 50, f"{kind}: reference-coloured pixels in output"
    if pid_before is not None:
        assert renderer.zygote_pid == pid_before, "zygote was restarted: the snippet crashed it"
    return result




def _ids(cases):
    return [name for name, _, _ in cases]


_DUMMY = type("D", (), {"escape_file": "/e", "victim_dir": "/v", "victim_file": "/v/f", "reference": "/r"})()


@pytest.mark.parametrize("index", range(len(chart_cases(_DUMMY, "http://127.0.0.1:1"))),
                         ids=_ids(chart_cases(_DUMMY, "http://127.0.0.1:1")))
def test_hostile_chart(renderers, canaries, server, index):
    name, code, expected = chart_cases(canaries, server)[index]
    result = _check(renderers, "chart", code, expected)
    if name == "env secret":
        assert "clean" in result.detail
    assert canaries.intact()
    assert _HitCounter.hits == 0


@pytest.mark.parametrize("index", range(len(svg_cases(_DUMMY, "http://127.0.0.1:1"))),
                         ids=_ids(svg_cases(_DUMMY, "http://127.0.0.1:1")))
def test_hostile_svg(renderers, canaries, server, index):
    name, code, expected = svg_cases(canaries, server)[index]
    result = _check(renderers, "svg", code, expected)
    if name == "canvas bomb":
        assert result.timings["total_s"] < 2.0
    assert canaries.intact()
    assert _HitCounter.hits == 0


@pytest.mark.parametrize("index", range(len(table_cases(_DUMMY, "http://127.0.0.1:1"))),
                         ids=_ids(table_cases(_DUMMY, "http://127.0.0.1:1")))
def test_hostile_table(renderers, canaries, server, index):
    _, code, expected = table_cases(canaries, server)[index]
    _check(renderers, "table", code, expected)
    assert _HitCounter.hits == 0


def test_still_serving_after_hostile_suite(renderers):
    """Runs last in this module: every renderer still renders ordinary input correctly."""
    chart = renderers["chart"].render("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])")
    svg = renderers["svg"].render('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                                  '<circle cx="5" cy="5" r="4" fill="green"/></svg>')
    table = renderers["table"].render("| a | b |\n|---|---|\n| 1 | 2 |")
    assert chart.ok and svg.ok and table.ok, (chart.detail, svg.detail, table.detail)


def test_delayed_meta_refresh_does_not_taint_next_shot(renderers, server):
    import time

    table = renderers["table"]
    first = table.render(f'<meta http-equiv="refresh" content="0.3;url={server}/late"><table><tr><td>x</td></tr>'
                         "</table>", timeout_s=NORMAL)
    assert first.failure in (None, F.SANDBOX_VIOLATION)
    time.sleep(0.8)  # the refresh fires now, between shots
    second = table.render("| a | b |\n|---|---|\n| 1 | 2 |", timeout_s=NORMAL)
    assert second.ok, second.detail
    assert _HitCounter.hits == 0


# A snippet that tries to write to every device in /dev (listed by the test) and to files and new entries in every path the child
# may read (up to 40 files under each), and reports where it succeeded.
_WRITE_PROBE = r'''
import json, os
paths = list(DEVICES)
for root in ROOTS:
    paths.append(root)
    if os.path.isdir(root):
        seen = 0
        for here, dirs, files in os.walk(root):
            paths.append(here)
            for name in files[:4]:
                paths.append(os.path.join(here, name))
                seen += 1
            if seen >= 40:
                break
writable = []
for path in paths:
    targets = [os.path.join(path, '.probe-new')] if os.path.isdir(path) else [path]
    for target in targets:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | (os.O_CREAT if target != path else 0))
        except OSError:
            continue
        os.close(fd)
        writable.append(os.path.realpath(path))  # /dev/stdout etc. are the child's fds 0-2: /dev/null
raise RuntimeError('WRITABLE ' + json.dumps(sorted(set(writable))))
'''


def test_dev_null_is_the_only_newly_writable_path(renderers):
    """/dev/null became writable for Qhull (triangulations); nothing else did: every /dev entry and every
    path the child may read (sampled: all roots, up to 40 files each) refuses writing and creating files."""
    from pipeline.render import sandbox

    chart = renderers["chart"]
    if not chart.layers.get("landlock", "").startswith("ok"):
        pytest.skip("Landlock unavailable on this host")
    roots = sandbox.library_read_paths()
    rules = sandbox.landlock_rules(roots, "/tmp/job")
    assert [(p, k) for p, k in rules if k != "read"] == [("/dev/null", "write_device"), ("/tmp/job", "full")]
    # (the child cannot list /dev; never open a watchdog, even to prove it is refused)
    devices = sorted(os.path.join("/dev", n) for n in os.listdir("/dev") if "watchdog" not in n)
    result = chart.render(f"ROOTS = {roots!r}\nDEVICES = {devices!r}\n" + _WRITE_PROBE, timeout_s=60)
    assert result.failure == F.RUNTIME_ERROR and result.detail.startswith("RuntimeError: WRITABLE"), result.detail
    assert json.loads(result.detail.split("WRITABLE ", 1)[1]) == ["/dev/null"]
    assert chart.render("import matplotlib.pyplot as plt\nplt.triplot([0, 1, 0, 1], [0, 0, 1, 1])").ok
