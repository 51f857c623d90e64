"""Structural diff of two tables (HTML or Markdown): layout, text and numeric discrepancies.

Both sides become a span-aware cell grid (the edit engine's `build_grid`, so rows and columns are named the
way its labels name them: "row 'West', column 'Price'"). Rows and columns are paired by content and order
(a deleted row is one layout error, not one per cell), then paired cells are compared: spans (layout),
alignment (layout), words (text) and numbers (numeric), with the edit engine's wording and severities.
"""

from __future__ import annotations

import re
from collections import Counter

from lxml import etree, html

from pipeline.critic.structural.base import (
    CandidateUnparseable,
    Findings,
    StructuralDiffError,
    align,
    dice,
    is_typo,
    transposition,
    unparseable_candidate,
)
from pipeline.data.edits.base import scale_severity
from pipeline.data.edits.table import Grid, build_grid

TASK = "table"
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")  # as the edit engine reads numbers
_ALIGN = re.compile(r"text-align:\s*(\w+)")
_SAME = 0.5  # rows/columns at least this alike (Dice of their cell texts) are the same row/column


def parse(code: str) -> Grid:
    """The first table of HTML code, or of a Markdown pipe table, as a grid; CandidateUnparseable if none."""
    if not isinstance(code, str) or not code.strip():
        raise CandidateUnparseable("the code is empty")
    if "<table" in code.lower():
        source = code
    else:
        from markdown_it import MarkdownIt

        source = MarkdownIt("commonmark", {"html": False}).enable("table").render(code)
        if "<table" not in source:
            raise CandidateUnparseable("no HTML table and no Markdown pipe table")
    try:
        doc = html.fromstring(source)
    except (etree.ParserError, ValueError) as e:
        raise CandidateUnparseable(f"the HTML does not parse: {e}") from None
    table = doc if doc.tag == "table" else doc.find(".//table")
    if table is None:
        raise CandidateUnparseable("no table element")
    grid = build_grid(table)
    if not grid.slots:
        raise CandidateUnparseable("the table has no cells")
    return grid


def text(cell) -> str:
    return " ".join((cell.text_content() or "").split())


def is_numeric(s: str) -> bool:
    return bool(_NUMBER.search(s)) and sum(ch.isalpha() for ch in s) <= 3


def alignment(cell) -> str:
    m = _ALIGN.search(cell.get("style") or "")
    return (m.group(1) if m else (cell.get("align") or "left")).lower()


def _span(cell, attr: str) -> int:
    v = (cell.get(attr) or "1").strip()
    return int(v) if v.isdigit() and int(v) > 0 else 1


# ------------------------------------------------------------------------------------------------ diff
def diff(reference_code: str, candidate_code: str) -> list[dict]:
    try:
        ref = parse(reference_code)
    except CandidateUnparseable as e:
        raise StructuralDiffError(f"the table reference cannot be parsed: {e}") from None
    try:
        cand = parse(candidate_code)
    except CandidateUnparseable as e:
        return unparseable_candidate(TASK, str(e))
    out = Findings(TASK)
    _caption(ref, cand, out)
    rowmap = _pair_rows(ref, cand, out)
    colmap = _pair_columns(ref, cand, out)
    _cells(ref, cand, rowmap, colmap, out)
    return out.dicts()


def _caption(ref: Grid, cand: Grid, out: Findings) -> None:
    def caption(g: Grid) -> str:
        el = g.table.find("caption")
        return text(el) if el is not None else ""

    old, new = caption(ref), caption(cand)
    if old == new:
        return
    if not new:
        out.add("text", 1, "caption", f"The caption '{old}' is missing.")
    elif not old:
        out.add("text", 1, "caption", f"An extra caption '{new}' appears.")
    else:
        out.add("text", 1 if is_typo(old, new) else 2, "caption", f"The caption reads '{new}' instead of '{old}'.")


def _row_texts(g: Grid, r: int) -> tuple[str, list[str]]:
    """(the row's name cell, all its texts): a row is known by its label first."""
    cells = sorted(((c, cell) for cell, (orow, c) in g.origin.items() if orow == r), key=lambda x: x[0])
    own = [cell for _, cell in cells if _span(cell, "rowspan") == 1]
    return (text(own[0]) if own else ""), [text(cell) for _, cell in cells]


def _col_texts(g: Grid, c: int) -> tuple[str, list[str]]:
    """(the column's lowest header text, all its texts): a column is known by its header first."""
    cells = sorted(((r, cell) for cell, (r, ocol) in g.origin.items() if ocol == c), key=lambda x: x[0])
    head = [text(cell) for r, cell in cells if r < g.n_header_rows and text(cell)]
    return (head[-1] if head else ""), [text(cell) for _, cell in cells]


def _cell_sim(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if is_typo(a, b):
        return 0.8
    ma, mb = _NUMBER.search(a), _NUMBER.search(b)
    if ma and mb and ma.group(0) == mb.group(0) and is_numeric(a) and is_numeric(b):
        return 0.8  # the same number, another unit or sign
    return 0.0


def _soft_dice(ta: list[str], tb: list[str]) -> float:
    """Dice of two lists of cell texts where a misspelt cell or a number with another unit counts 0.8."""
    if not ta and not tb:
        return 1.0
    exact = dice(ta, tb)
    if exact == 1.0 or not ta or not tb:
        return exact
    rest_b = list(tb)
    score = 0.0
    for t in sorted(ta, key=lambda t: t not in tb):  # exact matches first
        if t in rest_b:
            rest_b.remove(t)
            score += 1.0
            continue
        scores = [_cell_sim(t, u) for u in rest_b]
        if scores and max(scores) > 0:
            k = scores.index(max(scores))
            score += scores[k]
            rest_b.pop(k)
    return 2 * score / (len(ta) + len(tb))


def _sim(a: tuple[str, list[str]], b: tuple[str, list[str]]) -> float:
    """Soft Dice of the cell texts; a line with the same name is the same line unless its content is all new."""
    (ka, ta), (kb, tb) = a, b
    ta, tb = [t for t in ta if t], [t for t in tb if t]
    d = _soft_dice(ta, tb) if ta or tb else 0.6
    if ka and ka == kb:
        rest_a, rest_b = list(ta), list(tb)
        for rest in (rest_a, rest_b):
            if ka in rest:
                rest.remove(ka)
        return max(d, 0.55 + 0.45 * dice(rest_a, rest_b))
    return d


def _pair_lines(ref_keys: list, cand_keys: list, name_ref, name_cand, what: str, out: Findings,
                severity_missing: int) -> dict[int, int]:
    """Pair rows (or columns) of the two grids: a swap, then order-preserving alignment, then moved lines."""
    mapping: dict[int, int] = {}
    sim = _sim
    swap = transposition([k for _, k in ref_keys], [k for _, k in cand_keys], sim, _SAME)
    if swap:
        a, b = swap
        na, nb = name_ref(ref_keys[a][0]), name_ref(ref_keys[b][0])
        out.add("layout", 2, f"{na} and {nb}", f"The {na} and the {nb} have swapped places.")
        for k, (r, _) in enumerate(ref_keys):
            mapping[r] = cand_keys[b if k == a else a if k == b else k][0]
        return mapping
    pairs = align([k for _, k in ref_keys], [k for _, k in cand_keys], sim, _SAME, fill_gaps=False)
    missing = [i for i, j in pairs if j is None]
    extra = [j for i, j in pairs if i is None]
    for i, j in pairs:
        if i is not None and j is not None:
            mapping[ref_keys[i][0]] = cand_keys[j][0]
    # a line found again elsewhere moved; lines left over in the same place were changed, not removed
    def same_name(i: int, j: int) -> bool:
        return bool(ref_keys[i][1][0]) and ref_keys[i][1][0] == cand_keys[j][1][0]

    for i in list(missing):
        best = max(extra, key=lambda j: (same_name(i, j), sim(ref_keys[i][1], cand_keys[j][1])), default=None)
        if best is not None and (same_name(i, best) or sim(ref_keys[i][1], cand_keys[best][1]) >= 0.8):
            name = name_ref(ref_keys[i][0])
            out.add("layout", 2, name, f"The {name} is out of place.")
            mapping[ref_keys[i][0]] = cand_keys[best][0]
            missing.remove(i)
            extra.remove(best)
    for i, j in _gap_pairs(pairs, missing, extra):
        mapping[ref_keys[i][0]] = cand_keys[j][0]
        missing.remove(i)
        extra.remove(j)
    for i in missing:
        name = name_ref(ref_keys[i][0])
        out.add("layout", severity_missing, name, f"The {name} is missing.")
    for j in extra:
        name = name_cand(cand_keys[j][0])
        out.add("layout", 2, f"extra {what}", f"An extra {name} appears.")
    return mapping


def _gap_pairs(pairs, missing: list[int], extra: list[int]) -> list[tuple[int, int]]:
    """Unpaired lines that sit between the same two paired neighbours, paired in order."""
    gaps: dict[int, tuple[list, list]] = {}
    anchor = 0
    for i, j in pairs:
        if i is not None and j is not None:
            anchor += 1
        elif i is not None and i in missing:
            gaps.setdefault(anchor, ([], []))[0].append(i)
        elif j is not None and j in extra:
            gaps.setdefault(anchor, ([], []))[1].append(j)
    return [p for rs, cs in gaps.values() for p in zip(sorted(rs), sorted(cs))]


def _pair_rows(ref: Grid, cand: Grid, out: Findings) -> dict[int, int]:
    def header_name(r: int) -> str:
        return f"header row {r + 1}"

    mapping: dict[int, int] = {}
    for header in (True, False):
        ref_rows = range(ref.n_header_rows) if header else range(ref.n_header_rows, len(ref.rows))
        cand_rows = range(cand.n_header_rows) if header else range(cand.n_header_rows, len(cand.rows))
        ref_keys = [(r, _row_texts(ref, r)) for r in ref_rows]
        cand_keys = [(r, _row_texts(cand, r)) for r in cand_rows]
        mapping.update(_pair_lines(ref_keys, cand_keys, header_name if header else ref.row_name,
                                   header_name if header else cand.row_name, "header row" if header else "row",
                                   out, 2 if header else 3))
    return mapping


def _pair_columns(ref: Grid, cand: Grid, out: Findings) -> dict[int, int]:
    ref_keys = [(c, _col_texts(ref, c)) for c in range(ref.n_cols)]
    cand_keys = [(c, _col_texts(cand, c)) for c in range(cand.n_cols)]
    return _pair_lines(ref_keys, cand_keys, ref.column_name, cand.column_name, "column", out, 3)


def _cells(ref: Grid, cand: Grid, rowmap: dict[int, int], colmap: dict[int, int], out: Findings) -> None:
    back_rows = {v: k for k, v in rowmap.items()}
    back_cols = {v: k for k, v in colmap.items()}
    ref_slots: dict = {}
    for slot, cell in ref.slots.items():
        ref_slots.setdefault(cell, []).append(slot)
    cand_slots: dict = {}
    for slot, cell in cand.slots.items():
        cand_slots.setdefault(cell, []).append(slot)
    merged_reported: set = set()
    short_rows: Counter = Counter()
    alignments: dict[int, list[tuple[str, str]]] = {}
    for cell, (r0, c0) in sorted(ref.origin.items(), key=lambda kv: kv[1]):
        mapped = [(rowmap[r], colmap[c]) for r, c in sorted(ref_slots.get(cell, [])) if r in rowmap and c in colmap]
        if not mapped:
            continue  # its row or column is gone: reported there
        targets = []
        for slot in mapped:
            other = cand.slots.get(slot)
            if other is None:
                short_rows[r0] += 1
            elif other not in targets:
                targets.append(other)
        if not targets:
            continue
        where = ref.where(cell)
        header = r0 < ref.n_header_rows
        cs, rs = _span(cell, "colspan"), _span(cell, "rowspan")
        if len(targets) > 1:
            if cs > 1 or rs > 1:
                out.add("layout", 2, where,
                        f"The merged cell spanning {cs} column(s) × {rs} row(s) is split into separate cells.")
            else:
                out.add("layout", 2, where, "The cell is split into separate cells.")
        other = targets[0]
        covered = [(back_rows[r], back_cols[c]) for r, c in cand_slots[other] if r in back_rows and c in back_cols]
        covered_cells = []
        for slot in sorted(covered):
            x = ref.slots.get(slot)
            if x is not None and x not in covered_cells:
                covered_cells.append(x)
        if len(targets) == 1 and len(covered_cells) > 1:
            # the candidate merged this cell with its neighbours: report once, compare the first cell only
            if other in merged_reported:
                continue
            merged_reported.add(other)
            first = covered_cells[0]
            if len(covered_cells) == 2 and ref.origin[covered_cells[1]][0] == ref.origin[first][0]:
                desc = "Two neighbouring cells are merged into one; the right cell's content is lost."
            else:
                desc = f"{len(covered_cells)} neighbouring cells are merged into one; only the first keeps its content."
            out.add("layout", 2, ref.where(first), desc)
            if first is not cell:
                continue
        _compare_text(text(cell), text(other), header, where, out)
        if not header and cs == 1:
            alignments.setdefault(c0, []).append((alignment(cell), alignment(other)))
    for r, n in short_rows.items():
        name = ref.row_name(r) if r >= ref.n_header_rows else f"header row {r + 1}"
        out.add("layout", 2, name, f"The {name} has {n} cell(s) fewer than it should.")
    for c, pairs in sorted(alignments.items()):
        changed = [(a, b) for a, b in pairs if a != b]
        if changed:
            old = Counter(a for a, _ in changed).most_common(1)[0][0]
            new = Counter(b for _, b in changed).most_common(1)[0][0]
            name = ref.column_name(c)
            out.add("layout", 1, name, f"The cells of the {name} are aligned {new} instead of {old}.")


def _compare_text(old: str, new: str, header: bool, where: str, out: Findings) -> None:
    if old == new:
        return
    if header:
        sev = 1 if is_typo(old, new) else 2
        if not new:
            out.add("text", 2, where, f"The header is empty instead of '{old}'.")
        elif not old:
            out.add("text", 2, where, f"The header reads '{new}' instead of being empty.")
        else:
            out.add("text", sev, where, f"The header reads '{new}' instead of '{old}'.")
        return
    if (old and is_numeric(old)) or (not old and is_numeric(new)):
        severity, desc = _numeric_change(old, new)
        out.add("numeric", severity, where, desc)
        return
    if not new:
        out.add("text", 2, where, f"The cell is empty instead of '{old}'.")
    elif not old:
        out.add("text", 2, where, f"The cell reads '{new}' instead of being empty.")
    elif is_typo(old, new):
        out.add("text", 1, where, f"The cell is misspelled as '{new}' instead of '{old}'.")
    else:
        out.add("text", 2, where, f"The cell reads '{new}' instead of '{old}'.")


def _digits(num: str) -> str:
    return re.sub(r"[^\d]", "", num).lstrip("0")


def _numeric_change(old: str, new: str) -> tuple[int, str]:
    """Severity and description of a changed numeric cell, named as the edit engine names its numeric edits."""
    if not new:
        return 2, f"The value {old} is missing; the cell is empty."
    if not old:
        return 2, f"The cell shows {new} but should be empty."
    mo, mn = _NUMBER.search(old), _NUMBER.search(new)
    if mn is None:
        return 2, f"The value is {new} instead of {old}."
    a, b = mo.group(0), mn.group(0)
    va, vb = _as_float(a), _as_float(b)
    rest_old, rest_new = old[: mo.start()] + "#" + old[mo.end():], new[: mn.start()] + "#" + new[mn.end():]
    if "." in a + b and _digits(a) == _digits(b) and a.lstrip("+-").replace(",", "") != b.lstrip("+-").replace(",", ""):
        return 3, f"The decimal point is misplaced: {new} instead of {old}."
    if va is not None and vb is not None and va != 0 and abs(va) == abs(vb) and va != vb:
        return 2, f"The sign is wrong: {new} instead of {old}."
    if a == b and rest_old != rest_new:
        return 2, f"The unit is wrong: {new} instead of {old}."
    if va is not None and vb is not None:
        rel = (vb - va) / abs(va) if va else 1.0
        return scale_severity(rel), f"The value is {new} instead of {old}."
    return 2, f"The value is {new} instead of {old}."


def _as_float(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None
