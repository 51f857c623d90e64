"""Seeded generator of tables, written as HTML (merged cells allowed) or Markdown (no merges).

A table is first a `TableSpec` (header rows with spans, body rows, per-column alignment) and is then written
out; HTML is built with lxml so it is always well formed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lxml import etree

from pipeline.data.vocab import CATEGORY_SETS, SERIES_NAMES


def _nonzero(v: float, decimals: int) -> float:
    """Round, but never to zero: "-0.0" and "+0.0" read as rendering bugs, not as data."""
    r = round(v, decimals)
    return r if r != 0 else 10 ** -decimals


# Column kinds: how to make a value, and its unit suffix/prefix.
_NUMERIC_COLUMNS = [
    ("Revenue", lambda r: f"${r.randint(10, 990)},{r.randint(0, 999):03d}"),
    ("Growth", lambda r: f"{_nonzero(r.uniform(-12, 25), 1):+.1f}%"),
    ("Weight", lambda r: f"{r.uniform(0.2, 80):.1f} kg"),
    ("Price", lambda r: f"€{r.uniform(1, 500):.2f}"),
    ("Accuracy", lambda r: f"{r.uniform(40, 99.9):.1f}"),
    ("Latency", lambda r: f"{r.randint(3, 900)} ms"),
    ("Count", lambda r: str(r.randint(1, 5000))),
    ("Share", lambda r: f"{r.uniform(0, 60):.1f}%"),
    ("Temp.", lambda r: f"{_nonzero(r.uniform(-15, 40), 1):.1f} °C"),
    ("Distance", lambda r: f"{r.uniform(0.5, 900):.1f} km"),
    ("Score", lambda r: f"{r.uniform(0, 10):.2f}"),
    ("Volume", lambda r: f"{r.randint(1, 999)} L"),
    ("Power", lambda r: f"{r.randint(5, 3000)} W"),
    ("Ratio", lambda r: f"{r.uniform(0, 1):.3f}"),
]
_TEXT_COLUMNS = [
    ("Status", ["Active", "Pending", "Closed", "On hold", "Draft", "Shipped"]),
    ("Owner", ["Ana Ruiz", "Li Wei", "Sam Patel", "Jo Berg", "Mia Kohl", "Tom Aalto", "Ravi Rao"]),
    ("Grade", ["A", "B+", "B", "C", "A-", "D"]),
    ("Method", ["Baseline", "Ours", "Ablation", "Fine-tuned", "Zero-shot", "Ensemble"]),
    ("Type", ["Standard", "Premium", "Basic", "Custom", "Legacy"]),
    ("Note", ["ok", "see appendix", "revised", "n/a", "estimated", "preliminary"]),
]
_ROW_KEYS = [("Region", ["North", "South", "East", "West", "Central", "Coastal"]),
             ("Product", ["Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Flange", "Bracket"]),
             ("Model", ["ResNet-50", "ViT-B/16", "BERT-base", "GPT-2", "T5-small", "LSTM", "CNN-3"]),
             ("City", ["Lisbon", "Prague", "Dublin", "Warsaw", "Athens", "Riga", "Zurich"]),
             ("Item", ["Bolts", "Nuts", "Washers", "Screws", "Rivets", "Pins"]),
             ("Team", ["Red", "Blue", "Green", "Gold", "Silver", "Black"])]
_CAPTIONS = ["Quarterly results", "Benchmark summary", "Inventory status", "Regional overview",
             "Experiment log", "Product comparison", "Monthly report", "Test measurements"]


@dataclass
class Cell:
    text: str
    colspan: int = 1
    rowspan: int = 1
    header: bool = False


@dataclass
class TableSpec:
    header_rows: list[list[Cell]]
    body_rows: list[list[Cell]]
    align: list[str]  # per leaf column: left | center | right
    caption: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def has_merges(self) -> bool:
        return any(c.colspan > 1 or c.rowspan > 1 for row in self.header_rows + self.body_rows for c in row)


def generate_table_spec(rng: random.Random, allow_merges: bool = True) -> TableSpec:
    key_name, key_values = rng.choice(_ROW_KEYS)
    n_rows = rng.randint(3, min(7, len(key_values)))
    keys = rng.sample(key_values, n_rows)
    n_num = rng.randint(1, 4)
    n_txt = rng.randint(0, 2)
    num_cols = rng.sample(_NUMERIC_COLUMNS, n_num)
    txt_cols = rng.sample(_TEXT_COLUMNS, n_txt)
    columns: list[tuple[str, str, object]] = [("num", name, f) for name, f in num_cols] + \
                                              [("txt", name, vals) for name, vals in txt_cols]
    rng.shuffle(columns)

    grouped_header = allow_merges and len(columns) >= 2 and rng.random() < 0.45
    group_rows = allow_merges and n_rows >= 4 and rng.random() < 0.35
    align = ["left"] + [("right" if kind == "num" else rng.choice(["left", "center"])) for kind, _, _ in columns]

    header_rows: list[list[Cell]] = []
    if grouped_header:
        # Two header levels: leaf columns under one or two period groups ("2023" spanning several columns).
        periods = rng.choice(CATEGORY_SETS[1:2] + CATEGORY_SETS[9:10] + [["Train", "Test"], ["Before", "After"]])
        split = rng.randint(1, len(columns) - 1) if len(columns) > 2 else 1
        top = [Cell(key_name, rowspan=2, header=True)]
        spans = [split, len(columns) - split]
        labels = rng.sample(periods, 2)
        for span, label in zip(spans, labels):
            top.append(Cell(label, colspan=span, header=True))
        header_rows = [top, [Cell(name, header=True) for _, name, _ in columns]]
    else:
        header_rows = [[Cell(key_name, header=True)] + [Cell(name, header=True) for _, name, _ in columns]]

    body_rows: list[list[Cell]] = []
    group_labels = rng.sample(SERIES_NAMES, 2) if group_rows else []
    for i, key in enumerate(keys):
        row = []
        if group_rows:
            # The first column becomes a group label spanning rows: "Domestic" over rows 0..k-1, ...
            first = n_rows // 2
            if i == 0:
                row.append(Cell(group_labels[0], rowspan=first))
            elif i == first:
                row.append(Cell(group_labels[1], rowspan=n_rows - first))
        row.append(Cell(key))
        for kind, _, gen in columns:
            row.append(Cell(gen(rng) if kind == "num" else rng.choice(gen)))
        body_rows.append(row)
    if group_rows:
        # the group column needs a header cell of its own
        span = 2 if grouped_header else 1
        header_rows[0].insert(0, Cell("Group", rowspan=span, header=True))
        align = ["left"] + align
    caption = rng.choice(_CAPTIONS) if rng.random() < 0.4 else ""
    return TableSpec(header_rows, body_rows, align, caption,
                     meta={"rows": n_rows, "columns": len(align), "grouped_header": grouped_header,
                           "group_rows": group_rows})


def _leaf_alignment(spec: TableSpec, row: list[Cell], row_index: int, body: bool) -> list[str]:
    """Alignment for each cell in `row`, honouring rowspans from earlier rows (occupied grid slots)."""
    occupied = set()
    rows = spec.header_rows + spec.body_rows if body else spec.header_rows
    offset = len(spec.header_rows) if body else 0
    for r_i, r in enumerate(rows[: offset + row_index]):
        col = 0
        occ_r = {c for (rr, c) in occupied if rr == r_i}
        for cell in r:
            while col in occ_r:
                col += 1
            for dr in range(cell.rowspan):
                for dc in range(cell.colspan):
                    occupied.add((r_i + dr, col + dc))
            col += cell.colspan
    target = offset + row_index
    occ = {c for (rr, c) in occupied if rr == target}
    out, col = [], 0
    for cell in row:
        while col in occ:
            col += 1
        out.append(spec.align[min(col, len(spec.align) - 1)])
        col += cell.colspan
    return out


def table_to_html(spec: TableSpec, rng: random.Random) -> str:
    table = etree.Element("table")
    if rng.random() < 0.5:
        table.set("border", "1")
    if spec.caption:
        etree.SubElement(table, "caption").text = spec.caption
    thead = etree.SubElement(table, "thead")
    for row in spec.header_rows:
        tr = etree.SubElement(thead, "tr")
        for cell in row:
            th = etree.SubElement(tr, "th")
            th.text = cell.text
            if cell.colspan > 1:
                th.set("colspan", str(cell.colspan))
            if cell.rowspan > 1:
                th.set("rowspan", str(cell.rowspan))
    tbody = etree.SubElement(table, "tbody")
    for i, row in enumerate(spec.body_rows):
        tr = etree.SubElement(tbody, "tr")
        for cell, align in zip(row, _leaf_alignment(spec, row, i, body=True)):
            td = etree.SubElement(tr, "td")
            td.text = cell.text
            if cell.colspan > 1:
                td.set("colspan", str(cell.colspan))
            if cell.rowspan > 1:
                td.set("rowspan", str(cell.rowspan))
            if align != "left":
                td.set("style", f"text-align: {align}")
    return etree.tostring(table, encoding="unicode", method="html", pretty_print=True)


def table_to_markdown(spec: TableSpec) -> str:
    if spec.has_merges:
        raise ValueError("a Markdown table cannot hold merged cells")
    marks = {"left": ":---", "center": ":---:", "right": "---:"}

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line([c.text for c in spec.header_rows[0]]), "| " + " | ".join(marks[a] for a in spec.align) + " |"]
    out += [line([c.text for c in row]) for row in spec.body_rows]
    return "\n".join(out) + "\n"


def generate_table(rng: random.Random, fmt: str = "mixed") -> tuple[str, dict]:
    """Table code and metadata. fmt: "html", "markdown" or "mixed" (Markdown for ~30 % of merge-free tables)."""
    want_markdown = fmt == "markdown" or (fmt == "mixed" and rng.random() < 0.3)
    spec = generate_table_spec(rng, allow_merges=not want_markdown)
    if want_markdown:
        code, code_format = table_to_markdown(spec), "markdown"
    else:
        code, code_format = table_to_html(spec, rng), "html"
    return code, {**spec.meta, "format": code_format, "merged_cells": spec.has_merges}
