"""Compact synthetic programs: a small bar/line chart, a 2×3 Markdown table, an SVG with 1–3 shapes.

Short enough for a tiny model's token budget: the tiny policy's warm start (pipeline/tiny/warm_start.py) learns
them, the tiny tokenizer's corpus includes them, and the critic's natural errors start from them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

from pipeline.render import make_renderer
from pipeline.sample import TASK_KINDS
from pipeline.tasks import get_task

log = logging.getLogger(__name__)

COMPACT_KINDS = TASK_KINDS
# Rendered at the renderers' default aspect ratios but small: the tiny processor downsizes to ≤128×128 anyway.
RENDER_SIZE = {"chart": (160, 120), "table": (192, 192), "svg": (128, 128)}

_LABEL_SETS = [["A", "B", "C", "D", "E"], ["Q1", "Q2", "Q3", "Q4"], ["Jan", "Feb", "Mar", "Apr", "May"],
               ["x", "y", "z"], ["Mon", "Tue", "Wed", "Thu", "Fri"]]
_COLORS = ["red", "blue", "green", "orange", "purple", "gray", "black", "teal"]
_TITLES = ["Sales", "Usage", "Trend", "Score", "Cost"]
_HEADERS = ["Item", "Name", "Year", "City", "Team", "Type"]
_CELLS = ["A", "B", "C", "Tea", "Oslo", "Rome", "Red", "Max"]


def compact_chart(rng: random.Random) -> str:
    lines = ["import matplotlib.pyplot as plt"]
    style = f",color='{rng.choice(_COLORS)}'" if rng.random() < 0.5 else ""
    if rng.random() < 0.4:  # a line over its values only
        values = [rng.randint(1, 30) for _ in range(rng.randint(3, 5))]
        lines.append(f"plt.plot({values!r}{style})".replace(" ", ""))
    else:  # categories and values: the two lists must have the same length to render
        labels = rng.choice(_LABEL_SETS)[:3]
        values = [rng.randint(1, 30) for _ in labels]
        lines.append(f"plt.{rng.choice(['bar', 'bar', 'barh', 'plot'])}({labels!r},{values!r}{style})"
                     .replace(" ", ""))
    if rng.random() < 0.5:
        lines.append(f"plt.title('{rng.choice(_TITLES)}')")
    return "\n".join(lines)


def compact_table(rng: random.Random) -> str:
    n_cols = rng.randint(2, 3)
    header = rng.sample(_HEADERS, n_cols)
    rows = [[rng.choice(_CELLS)] + [str(rng.randint(1, 99)) for _ in range(n_cols - 1)]
            for _ in range(rng.randint(1, 2))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * n_cols]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _shape(rng: random.Random) -> str:
    fill = rng.choice(_COLORS)
    if rng.random() < 0.5:
        x, y = rng.randint(2, 40), rng.randint(2, 40)
        return f'<rect x="{x}" y="{y}" width="{rng.randint(8, 60 - x)}" height="{rng.randint(8, 60 - y)}" ' \
               f'fill="{fill}"/>'
    return f'<circle cx="{rng.randint(12, 52)}" cy="{rng.randint(12, 52)}" r="{rng.randint(4, 12)}" fill="{fill}"/>'


def compact_svg(rng: random.Random) -> str:
    shapes = "".join(_shape(rng) for _ in range(rng.choice([1, 1, 2, 2, 3])))
    return f'<svg viewBox="0 0 64 64">{shapes}</svg>'


COMPACT_GENERATORS = {"chart": compact_chart, "table": compact_table, "svg": compact_svg}


def compact_program(kind: str, index: int, seed: int = 0, split: str = "train") -> str:
    """Compact program `index` of the seeded stream (seed, split, kind); the same whatever else is drawn."""
    if kind not in COMPACT_GENERATORS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {COMPACT_KINDS}")
    return COMPACT_GENERATORS[kind](random.Random(f"{seed}/compact-{split}/{kind}/{index}"))


def compact_corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Compact programs for the tokenizer corpus (so their boilerplate tokenizes into few tokens)."""
    for i in range(n):
        yield compact_program(COMPACT_KINDS[i % 3], i, seed=seed, split="tokenizer")



def write_compact_dataset(task: str, n: int, out_dir: Path, seed: int = 0, split: str = "train") -> int:
    """`n` compact tasks of one kind as a verl-style parquet file (the rows `pipeline/data/synth.py` writes,
    with compact programs): reference images a tiny warm-started policy can learn to reproduce. A program
    that does not render is logged and left out; returns how many rows were written."""
    from pipeline.data.records import png_bytes, write_parquet  # heavy: pulls in pyarrow

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    renderer = make_renderer(task)
    try:
        for index in range(n):
            code = compact_program(task, index, seed=seed, split=f"dataset-{split}")
            result = renderer.render(code)  # the renderer's default size, like the synthetic set's
            if not result.ok:
                log.warning("compact %s #%d did not render (%s): left out", task, index, result.failure)
                continue
            rows.append({
                "data_source": f"visual_erm_rl/compact_{task}",
                "prompt": get_task(task).verl_prompt(),
                "images": [{"bytes": png_bytes(result.image)}],
                "ability": f"{task}_to_code",
                "reward_model": {"style": "model", "ground_truth": code},
                "extra_info": {"index": index, "split": split, "task": task, "seed": seed, "meta": "{}"},
            })
    finally:
        renderer.close()
    if rows:
        write_parquet(rows, out_dir / f"{task}_{split}.parquet")
    return len(rows)
