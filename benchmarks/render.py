"""Render throughput, measured side by side in one run, pinned to one CPU core (renders/s per core).

    .venv/bin/python benchmarks/render.py [--rounds 7] [--repeat 2] [--fresh-every 1] [--no-pin] [--charts-only]
                                          [--no-fresh]
    .venv/bin/python benchmarks/render.py --corpus DIR [--json OUT.json] [--limit N]   (real-world fidelity)

chart modes (same snippets, same output size, same capture code, same RGBA → RGB fit, same blank check):
  sandboxed   ChartRenderer: zygote fork per snippet + full child sandbox, pixels through shared memory
  in-process  UNSAFE: exec in this process, with what any honest in-process renderer must do per snippet
              (fresh figures: close all afterwards; rcParams restored: matplotlib.rc_context)
  fresh       a new `python` per snippet that imports matplotlib and savefig()s a PNG (official scripts)
plus SVG (sandboxed cairosvg, 336×336) and table (Chromium, reused page) throughput.

--corpus DIR: real-world material someone else wrote (.py → chart, .svg → svg, .md/.markdown/.html/.htm →
table, found recursively): per kind the success rate (with failures by type), items/s of the sandboxed
renderer, and the pixel difference from the plain, unsandboxed way of rendering the same file (see
`plain_render`): mean absolute difference per channel (0-255) and the share of pixels off by more than 64.

Noise (other tenants share the cores): the modes are interleaved round by round, in a rotating order, and
every figure printed is a median over rounds with its min–max spread; the sandboxed / in-process ratio is taken
per round (both measured within seconds of each other) before the median. Rates are given per wall-clock second
(pinned to one core) and per CPU-second (this process, the zygote and all their children), which other tenants
disturb much less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHARTS = [
    """import matplotlib.pyplot as plt
import numpy as np
labels = ['Q1', 'Q2', 'Q3', 'Q4']; a = [20 + K % 7, 34, 30, 35 + K % 3]; b = [25, 32 - K % 5, 34, 20]
x = np.arange(len(labels)); w = 0.35
fig, ax = plt.subplots(figsize=(8, 6))
ax.bar(x - w/2, a, w, label='2023'); ax.bar(x + w/2, b, w, label='2024')
ax.set_xticks(x); ax.set_xticklabels(labels); ax.set_ylabel('Revenue'); ax.set_title(f'Revenue by quarter, run {K}')
ax.legend(); plt.tight_layout(); plt.savefig('chart.png'); plt.show()
""",
    """import matplotlib.pyplot as plt
import numpy as np
t = np.linspace(0, 10, 200)
plt.figure(figsize=(8, 5))
for k in range(4):
    plt.plot(t, np.sin(t + k + K / 10) * (k + 1), label=f'series {k}', linewidth=2)
plt.xlabel('time (s)'); plt.ylabel('amplitude'); plt.title(f'Signals #{K}'); plt.grid(True, alpha=.3)
plt.legend(loc='upper right'); plt.savefig('line.png')
""",
    """import matplotlib.pyplot as plt
sizes = [35 + K % 9, 25, 20, 15, 5]; labels = ['Chrome', 'Safari', 'Edge', 'Firefox', 'Other']
fig, ax = plt.subplots(figsize=(6, 6))
ax.pie(sizes, labels=labels, autopct='%1.1f%%', startangle=90, explode=(0.05, 0, 0, 0, 0))
ax.set_title(f'Browser share {2000 + K}'); plt.savefig('pie.png')
""",
    """import matplotlib.pyplot as plt
import numpy as np
np.random.seed(K)
x = np.random.randn(300); y = 2 * x + np.random.randn(300)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(x, y, c=y, cmap='viridis', s=12, alpha=.7); axes[0].set_title('Scatter')
axes[1].hist(y, bins=30, color='tab:orange', edgecolor='black'); axes[1].set_title('Histogram')
fig.suptitle('Distribution'); plt.tight_layout(); plt.savefig('scatter.png')
""",
    """import matplotlib.pyplot as plt
import numpy as np
cats = ['Apples', 'Bananas', 'Cherries', 'Dates', 'Elderberries', 'Figs']
vals = np.array([23, 45, 12 + K % 11, 36, 18, 29])
fig, ax = plt.subplots(figsize=(7, 5))
bars = ax.barh(cats, vals, color=plt.cm.Blues(vals / vals.max()))
ax.bar_label(bars, padding=3); ax.invert_yaxis(); ax.set_xlabel('Units sold')
ax.set_title(f'Fruit sales week {K}', fontweight='bold'); ax.spines[['top', 'right']].set_visible(False)
plt.tight_layout()
""",
]

SVGS = [
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect x="4" y="4" width="56" height="56" '
    'rx="12" fill="#2b7de9"/><circle cx="32" cy="26" r="10" fill="#fff"/><path d="M14 54 C18 40, 46 40, 50 54 Z" '
    'fill="#fff"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100"><defs><linearGradient id="g"><stop '
    'offset="0" stop-color="#f80"/><stop offset="1" stop-color="#08f"/></linearGradient></defs><rect width="200" '
    'height="100" fill="url(#g)"/><text x="20" y="60" font-size="30" fill="white">Logo</text></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><polygon points="50,5 61,39 98,39 68,61 '
    '79,95 50,75 21,95 32,61 2,39 39,39" fill="gold" stroke="#333" stroke-width="2"/></svg>',
]

TABLES = [
    "| Model | Params | Score |\n|---|---:|---:|\n| A | 7B | 61.2 |\n| B | 8B | 66.5 |\n| C | 72B | 78.0 |\n",
    "<table><tr><th>City</th><th>Pop.</th><th>Area</th></tr>" + "".join(
        f"<tr><td>City {i}</td><td>{i * 1234}</td><td>{i * 3.5:.1f}</td></tr>" for i in range(12)) + "</table>",
]

SIZE = (640, 480)


def variant(code: str, k: int) -> str:
    """Rollouts never repeat a snippet exactly: vary data and titles (no unfair cache hits in-process)."""
    return f"K = {k}\n" + code


def chart_batch(n_passes: int, start: int) -> list[str]:
    return [variant(code, start + i) for i, code in enumerate(CHARTS * n_passes)]


def pin_to_one_core() -> int:
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # inherited by the zygote, its children, fresh pythons and Chromium
    return core


def render_in_process(code: str, timings: dict | None = None) -> None:
    """UNSAFE baseline: the same capture code as the sandbox child, run in this process. Per snippet it does
    what an honest in-process renderer must (and no more): rcParams restored afterwards, all figures closed."""
    import matplotlib
    import matplotlib.pyplot as plt

    from pipeline.render import chart_child
    from pipeline.render.image import is_blank

    try:
        with matplotlib.rc_context():
            rgb, _ = chart_child.run(code, SIZE, {"max_side_px": 2048}, timings)
        is_blank(rgb)  # same output check as the renderer
    finally:
        plt.close("all")


def render_fresh_process(code: str, workdir: str) -> None:
    """What the official evaluation scripts do: one interpreter per snippet, savefig to PNG."""
    script = os.path.join(workdir, "snippet.py")
    with open(script, "w") as f:
        f.write("import matplotlib\nmatplotlib.use('Agg')\n" + code.replace("plt.show()", "")
                + "\nimport matplotlib.pyplot as _plt\n_plt.gcf().savefig('out.png', dpi=100)\n")
    subprocess.run([sys.executable, script], cwd=workdir, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - t0


def cpu_seconds(zygote_pid: int | None = None) -> float:
    """CPU time used so far by this process, its reaped children (fresh pythons) and, if given, the zygote
    and the snippet children it has reaped. Unlike wall time it ignores other tenants of a shared box."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    if zygote_pid is not None:
        with open(f"/proc/{zygote_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return total


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """median [min–max]"""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


CORPUS_KINDS = {".py": "chart", ".svg": "svg", ".md": "table", ".markdown": "table", ".html": "table",
                ".htm": "table"}

# The plain way to run a chart script: as its author would (`python script.py`, Agg, an empty working dir),
# then take the last raster image it saved; a script that saved none gets the official evaluation scripts'
# `plt.savefig()` of the current figure appended. Seeded as the sandbox child is, so unseeded random data
# does not count as a difference.
_PLAIN_CHART = """
import glob, os, random, runpy, sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
np.random.seed(0)
random.seed(0)
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
except SystemExit:
    pass
saved = [p for ext in ("png", "jpg", "jpeg") for p in glob.glob(f"**/*.{ext}", recursive=True)]
if saved:
    print(max(saved, key=lambda p: os.stat(p).st_mtime_ns))
elif plt.get_fignums():
    plt.savefig("__plain__.png")
    print("__plain__.png")
"""


def corpus_items(root: str) -> list[tuple[str, Path]]:
    items = [(CORPUS_KINDS[p.suffix.lower()], p) for p in sorted(Path(root).rglob("*"))
             if p.is_file() and p.suffix.lower() in CORPUS_KINDS]
    if not items:
        raise SystemExit(f"no .py/.svg/.md/.html files under {root}")
    return items


class PlainRenderer:
    """Each kind rendered the plain, unsandboxed way a user would, fitted into the same output size (aspect
    kept, white padding) for the comparison. UNSAFE: only for trusted corpora."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="render-plain-")
        self._pw = self._browser = self._page = None

    def render(self, kind: str, path: Path, size: tuple[int, int]):
        """HxWx3 uint8, or a str saying why the plain way failed too."""
        import numpy as np
        from PIL import Image

        from pipeline.render.config import RenderConfig
        from pipeline.render.image import content_bbox, fit_to_size, rgba_to_rgb_on_white

        if kind == "chart":
            job = tempfile.mkdtemp(dir=self.workdir)
            done = subprocess.run([sys.executable, "-c", _PLAIN_CHART, str(path.resolve())], cwd=job,
                                  capture_output=True, text=True, timeout=120, check=False,
                                  env={**os.environ, "MPLBACKEND": "Agg"})
            out = done.stdout.strip().splitlines()
            if done.returncode != 0 or not out:
                return f"plain run failed: {(done.stderr.strip().splitlines() or ['no figure'])[-1][:200]}"
            rgba = np.asarray(Image.open(os.path.join(job, out[-1])).convert("RGBA"))
            shutil.rmtree(job, ignore_errors=True)
            return fit_to_size(rgba_to_rgb_on_white(rgba), size)
        if kind == "svg":
            import io

            import cairosvg

            svg = path.read_bytes()
            png = cairosvg.svg2png(bytestring=svg, output_width=size[0])  # the file's own aspect ratio
            if Image.open(io.BytesIO(png)).height > size[1]:
                png = cairosvg.svg2png(bytestring=svg, output_height=size[1])
            return fit_to_size(rgba_to_rgb_on_white(np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))),
                               size)
        from pipeline.render.table import to_html

        if self._page is None:  # a plain browser page: JS on, network as is, default sandbox
            from playwright.sync_api import sync_playwright

            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.launch(executable_path="/usr/lib/chromium/chromium",
                                                     args=["--no-sandbox"])
            self._page = self._browser.new_page(viewport={"width": 1024, "height": 1024})
        self._page.set_content(to_html(path.read_text(encoding="utf-8", errors="replace")))
        import io

        shot = Image.open(io.BytesIO(self._page.screenshot(full_page=True))).convert("RGB")
        top, bottom, left, right = content_bbox(np.asarray(shot))
        crop = shot.crop((max(0, left - 8), max(0, top - 8), right + 8, bottom + 8))
        # Scaled up no more than the sandboxed renderer scales a small table (it re-rasterises, this resamples)
        scale = min(size[0] / crop.width, size[1] / crop.height, RenderConfig().table.max_upscale)
        if scale > 1:
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)
        return fit_to_size(np.asarray(crop), size, upscale=False)

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._pw.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def pixel_difference(a, b) -> tuple[float, float]:
    """(mean absolute difference per channel, 0-255; share of pixels with some channel off by > 64)."""
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), float((diff.max(axis=2) > 64).mean())


def run_corpus(root: str, json_out: str | None, limit: int | None) -> None:
    import json
    from collections import Counter, defaultdict

    from pipeline.render import close_all, render
    from pipeline.render.config import RenderConfig

    config = RenderConfig()
    items = corpus_items(root)[:limit]
    for kind in sorted({k for k, _ in items}):  # start each renderer before timing
        render(kind, {"chart": "import matplotlib.pyplot as plt\nplt.plot([1, 2])",
                      "svg": SVGS[0], "table": TABLES[0]}[kind])
    plain = PlainRenderer()
    rows, stats = [], defaultdict(lambda: {"n": 0, "ok": 0, "seconds": 0.0, "failures": Counter(),
                                           "diff": [], "off": [], "plain_failed": 0})
    try:
        for kind, path in items:
            code = path.read_text(encoding="utf-8", errors="replace")
            size = getattr(config, kind).size
            t0 = time.perf_counter()
            result = render(kind, code)
            seconds = time.perf_counter() - t0
            st = stats[kind]
            st["n"] += 1
            st["seconds"] += seconds
            row = {"kind": kind, "file": str(path), "ok": result.ok, "seconds": round(seconds, 3),
                   "failure": result.failure.value if result.failure else None, "detail": result.detail[:200]}
            if result.ok:
                st["ok"] += 1
                try:
                    reference = plain.render(kind, path, size)
                except Exception as e:  # noqa: BLE001 - the plain way failing is a finding, not a crash
                    reference = f"plain way failed: {type(e).__name__}: {e}"[:200]
                if isinstance(reference, str):
                    st["plain_failed"] += 1
                    row["plain"] = reference
                else:
                    row["mean_abs_diff"], row["share_off"] = pixel_difference(result.image, reference)
                    st["diff"].append(row["mean_abs_diff"])
                    st["off"].append(row["share_off"])
            else:
                st["failures"][result.failure.value] += 1
            rows.append(row)
    finally:
        plain.close()
        close_all()
    print(f"Real-world corpus {root}: {len(items)} files (sandboxed renderer vs the plain unsandboxed way)")
    print(f"  {'kind':<6} {'files':>5} {'ok':>5} {'success':>8} {'items/s':>8}  {'mean |diff| (0-255)':<22}"
          f" {'pixels off >64':<16} failures")
    for kind, st in sorted(stats.items()):
        diff = f"{statistics.mean(st['diff']):.2f} (max {max(st['diff']):.2f})" if st["diff"] else "-"
        off = f"{100 * statistics.mean(st['off']):.2f}%" if st["off"] else "-"
        fails = ", ".join(f"{k} {v}" for k, v in st["failures"].most_common()) or "none"
        if st["plain_failed"]:
            fails += f"; plain way failed on {st['plain_failed']}"
        print(f"  {kind:<6} {st['n']:>5} {st['ok']:>5} {100 * st['ok'] / st['n']:>7.1f}% "
              f"{st['n'] / st['seconds']:>8.2f}  {diff:<22} {off:<16} {fails}")
    for row in rows:
        if not row["ok"] or row.get("mean_abs_diff", 0) > 20 or "plain" in row:
            print(f"  - {row['kind']} {row['file']}: " + (
                f"{row['failure']}: {row['detail']}" if not row["ok"] else
                row.get("plain") or f"mean |diff| {row['mean_abs_diff']:.1f}, off {100 * row['share_off']:.1f}%"))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians are over these)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the chart snippets per round and mode")
    parser.add_argument("--fresh-every", type=int, default=1, help="fresh-process passes per round (slow)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    parser.add_argument("--charts-only", action="store_true", help="skip SVG and table throughput")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh-process mode (quick A/B runs)")
    parser.add_argument("--corpus", metavar="DIR", help="real-world mode: render every file under DIR, compare "
                                                        "with the plain way (throughput options are ignored)")
    parser.add_argument("--json", metavar="OUT", help="--corpus: also write one record per file")
    parser.add_argument("--limit", type=int, default=None, help="--corpus: at most this many files")
    args = parser.parse_args()
    if args.corpus:
        run_corpus(args.corpus, args.json, args.limit)
        return

    core = None if args.no_pin else pin_to_one_core()
    import matplotlib

    matplotlib.use("Agg")
    from pipeline.render import chart_child
    from pipeline.render.forkserver import ChartRenderer, SvgRenderer
    from pipeline.render.table import TableRenderer

    chart_child.warm({})  # the in-process baseline gets the same warm-up as the zygote
    chart = ChartRenderer()
    workdir = tempfile.mkdtemp(prefix="render-bench-")
    # Warm every path once (imports, zygote, font caches) and check the snippets render.
    for code in chart_batch(1, 0):
        result = chart.render(code, size=SIZE)
        assert result.ok, result.detail
        render_in_process(code)
    if not args.no_fresh:
        render_fresh_process(variant(CHARTS[0], 0), workdir)

    sandboxed_timings: list[dict] = []
    in_process_timings: list[dict] = []

    def sandboxed(code: str) -> None:
        result = chart.render(code, size=SIZE)
        assert result.ok, result.detail
        sandboxed_timings.append(result.timings)

    def in_process(code: str) -> None:
        timings: dict = {}
        t0 = time.perf_counter()
        render_in_process(code, timings)
        timings["total_s"] = time.perf_counter() - t0
        in_process_timings.append(timings)

    modes = {"sandboxed": sandboxed, "in-process": in_process,
             "fresh": lambda c: render_fresh_process(c, workdir)}
    if args.no_fresh:
        del modes["fresh"]
    wall_rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_rates: dict[str, list[float]] = {mode: [] for mode in modes}
    counts = dict.fromkeys(modes, 0)
    order = list(modes)
    for round_index in range(args.rounds):
        batch = chart_batch(args.repeat, start=1000 * (round_index + 1))  # same snippets for every mode
        for mode in order[round_index % len(order):] + order[: round_index % len(order)]:  # rotate the order
            items = batch[: len(CHARTS) * args.fresh_every] if mode == "fresh" else batch
            cpu0 = cpu_seconds(chart.zygote_pid)
            wall = timed(modes[mode], items)
            cpu = cpu_seconds(chart.zygote_pid) - cpu0
            wall_rates[mode].append(len(items) / wall)
            cpu_rates[mode].append(len(items) / cpu)
            counts[mode] += len(items)
    chart.close()

    svg_rate = table_rate = None
    if not args.charts_only:
        svg = SvgRenderer()
        svg.render(SVGS[0])
        svg_items = SVGS * 30
        svg_rate = len(svg_items) / timed(lambda s: svg.render(s), svg_items)
        svg.close()
        table = TableRenderer()
        table.render(TABLES[0])
        table_items = TABLES * 20
        table_rate = len(table_items) / timed(lambda t: table.render(t), table_items)
        table.close()
    shutil.rmtree(workdir, ignore_errors=True)

    pinned = f"pinned to CPU {core}" if core is not None else "not pinned"
    print(f"Render throughput ({pinned}; chart output {SIZE[0]}x{SIZE[1]}, {len(CHARTS)} snippets, "
          f"{args.rounds} interleaved rounds; median [min-max] over rounds)")
    print(f"  {'':<18} {'renders/s (wall, 1 core)':<26} {'renders per CPU-second':<26} renders")
    for mode in modes:
        print(f"  chart {mode:<11}  {spread(wall_rates[mode]):<26} {spread(cpu_rates[mode]):<26} {counts[mode]}")
    if svg_rate is not None:
        print(f"  svg   sandboxed    {svg_rate:8.2f} renders/s  (336x336, wall-clock)")
        print(f"  table chromium     {table_rate:8.2f} renders/s  (768x768, page reused, wall-clock)")
    targets = [("in-process", 0.8), ("fresh", 4.0)]
    for other, target in targets:
        if other not in modes:
            continue
        wall_ratio = [a / b for a, b in zip(wall_rates["sandboxed"], wall_rates[other])]
        cpu_ratio = [a / b for a, b in zip(cpu_rates["sandboxed"], cpu_rates[other])]
        print(f"ratio sandboxed / {other:<10}: wall {spread(wall_ratio)}   cpu {spread(cpu_ratio)}   "
              f"(per-round pairs; target >= {target:g})")
    print("time per chart render, median ms (sandboxed phases; transfer = renderer side: request/reply pipes,"
          " copy out of shared memory, blank check):")
    def med_ms(rows: list[dict], key: str) -> str:
        values = [row[key] for row in rows if key in row]
        return f"{statistics.median(values) * 1000:6.1f}" if values else "     -"
    transfer = [{"t": t["total_s"] - t["zygote_s"]} for t in sandboxed_timings]
    wait = [{"t": t["zygote_s"] - t["fork_s"] - t["sandbox_s"] - t["run_s"]} for t in sandboxed_timings]
    print(f"  sandboxed : fork {med_ms(sandboxed_timings, 'fork_s')}  sandbox {med_ms(sandboxed_timings, 'sandbox_s')}"
          f"  exec {med_ms(sandboxed_timings, 'exec_s')}  capture {med_ms(sandboxed_timings, 'capture_s')}"
          f"  copy {med_ms(sandboxed_timings, 'copy_s')}  reply+reap {med_ms(wait, 't')}"
          f"  transfer {med_ms(transfer, 't')}  total {med_ms(sandboxed_timings, 'total_s')}")
    print(f"  in-process: {'':<27} exec {med_ms(in_process_timings, 'exec_s')}  capture "
          f"{med_ms(in_process_timings, 'capture_s')}  {'':<37}total {med_ms(in_process_timings, 'total_s')}")
    load = os.getloadavg()[0]
    print(f"(load average at the end: {load:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
