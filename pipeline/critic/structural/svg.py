"""Structural diff of two SVG documents: structure, shape, style and text_symbol discrepancies.

Both documents are parsed as XML with DOCTYPE and entity declarations refused (nothing is ever expanded or
fetched) into their drawable elements in painting order. Elements are paired by kind, geometry, paint and
order (one missing shape is one error, and the rest stay paired); then pairs are compared: presence, copies,
painting order (structure), position, size, rotation, outline and corners (shape), fill, outline, opacity
and dashes (style), text and typography (text_symbol). Elements are named the way the edit engine names
them ("red circle (upper left)", `edits.svg.describe`), with its wording and severity rules. A candidate drawn
on another viewBox is compared in the reference's units, so a uniformly rescaled drawing is no error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from lxml import etree

from pipeline.critic.structural.base import (
    CandidateUnparseable,
    Findings,
    StructuralDiffError,
    is_typo,
    unparseable_candidate,
)
from pipeline.data.edits.base import scale_severity
from pipeline.data.edits.svg import describe
from pipeline.data.vocab import COLOR_NAME

TASK = "svg"
_SHAPES = {"rect", "circle", "ellipse", "line", "polyline", "polygon", "path", "text", "image", "use"}
_SKIP = {"defs", "clipPath", "mask", "pattern", "marker", "symbol", "linearGradient", "radialGradient", "style",
         "title", "desc", "metadata", "filter"}
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INHERITED = ("fill", "stroke", "stroke-width", "stroke-dasharray", "stroke-linecap", "font-size", "font-family",
              "font-weight", "font-style", "text-anchor")
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- parsing
def _tag(el) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def parse(code: str) -> etree._Element:
    if not isinstance(code, str) or not code.strip():
        raise CandidateUnparseable("the code is empty")
    if _FORBIDDEN.search(code):
        raise CandidateUnparseable("it declares a DOCTYPE or entities, which are refused")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(code.strip().encode("utf-8"), parser)
    except etree.XMLSyntaxError as e:
        raise CandidateUnparseable(f"the XML does not parse: {e}") from None
    if _tag(root) != "svg":
        raise CandidateUnparseable(f"the root element is {_tag(root) or 'not an element'}, not svg")
    return root


def _num(value: str | None, default: float = 0.0) -> float:
    try:
        return float(re.sub(r"[a-z%]+$", "", (value or "").strip()) or default)
    except ValueError:
        return default


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _style_attrs(el) -> dict[str, str]:
    """Own presentation attributes, `style="..."` declarations winning."""
    attrs = {k: v.strip() for k, v in el.attrib.items() if isinstance(k, str)}
    for decl in (attrs.pop("style", "") or "").split(";"):
        if ":" in decl:
            k, v = decl.split(":", 1)
            attrs[k.strip().lower()] = v.strip()
    return attrs


def viewbox(root) -> tuple[float, float, float, float]:
    vb = (root.get("viewBox") or "").replace(",", " ").split()
    if len(vb) == 4:
        try:
            x, y, w, h = map(float, vb)
            if w > 0 and h > 0:
                return x, y, w, h
        except ValueError:
            pass
    w = _num(root.get("width"), 256.0) or 256.0
    h = _num(root.get("height"), w) or w
    return 0.0, 0.0, w, h


# ------------------------------------------------------------------------------------------ transforms
Matrix = tuple[float, float, float, float, float, float]  # a b c d e f: x' = a x + c y + e, y' = b x + d y + f
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _mul(m: Matrix, n: Matrix) -> Matrix:
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (a * a2 + c * b2, b * a2 + d * b2, a * c2 + c * d2, b * c2 + d * d2, a * e2 + c * f2 + e, b * e2 + d * f2 + f)


def parse_transform(text: str | None) -> Matrix:
    m = IDENTITY
    for name, args in re.findall(r"(\w+)\s*\(([^)]*)\)", text or ""):
        v = [float(x) for x in _NUM.findall(args)]
        try:
            if name == "translate":
                t = (1, 0, 0, 1, v[0], v[1] if len(v) > 1 else 0)
            elif name == "scale":
                t = (v[0], 0, 0, v[1] if len(v) > 1 else v[0], 0, 0)
            elif name == "rotate":
                r = math.radians(v[0])
                t = (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0, 0)
                if len(v) >= 3:
                    t = _mul(_mul((1, 0, 0, 1, v[1], v[2]), t), (1, 0, 0, 1, -v[1], -v[2]))
            elif name == "skewX":
                t = (1, 0, math.tan(math.radians(v[0])), 1, 0, 0)
            elif name == "skewY":
                t = (1, math.tan(math.radians(v[0])), 0, 1, 0, 0)
            elif name == "matrix" and len(v) == 6:
                t = tuple(v)
            else:
                continue
        except IndexError:
            continue
        m = _mul(m, t)
    return m


def _apply(m: Matrix, p: tuple[float, float]) -> tuple[float, float]:
    a, b, c, d, e, f = m
    return a * p[0] + c * p[1] + e, b * p[0] + d * p[1] + f


def _relative_linear(m_ref: Matrix, m_cand: Matrix) -> tuple[float, float, bool]:
    """(rotation in degrees, uniform scale, is a pure rotation+scale) of cand's linear part relative to ref's."""
    a, b, c, d = m_ref[:4]
    det = a * d - b * c
    if abs(det) < 1e-12:
        return 0.0, 1.0, False
    inv = (d / det, -b / det, -c / det, a / det)
    a2, b2, c2, d2 = m_cand[:4]
    ra, rb = a2 * inv[0] + c2 * inv[1], b2 * inv[0] + d2 * inv[1]
    rc, rd = a2 * inv[2] + c2 * inv[3], b2 * inv[2] + d2 * inv[3]
    angle = math.degrees(math.atan2(rb, ra))
    scale = math.sqrt(abs(ra * rd - rb * rc))
    similar = abs(ra - rd) < 0.02 * max(1, scale) and abs(rb + rc) < 0.02 * max(1, scale)
    return angle, scale, similar


# ------------------------------------------------------------------------------------------ the model
@dataclass
class Node:
    el: etree._Element
    tag: str
    order: int
    attrs: dict[str, str]  # own presentation attributes
    inherited: dict[str, str]  # from ancestors
    group: etree._Element | None  # nearest <g> ancestor
    matrix: Matrix  # own transform only (group transforms are compared per group)
    scale: float = 1.0  # candidate units → reference units
    offset: tuple[float, float] = (0.0, 0.0)

    def prop(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, self.inherited.get(name, default))

    def length(self, name: str, default: float = 0.0) -> float:
        return _num(self.attrs.get(name), default) * self.scale

    def coord(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset[0]) * self.scale, (y - self.offset[1]) * self.scale

    @property
    def text(self) -> str:
        return " ".join("".join(self.el.itertext()).split()) if self.tag == "text" else ""


@dataclass
class Doc:
    root: etree._Element
    size: float  # the edit engine's canvas size: the viewBox width
    box: tuple[float, float, float, float]
    nodes: list[Node]
    background: Node | None
    gradients: dict[str, list[str]] = field(default_factory=dict)
    groups: list[etree._Element] = field(default_factory=list)


def _is_background(el, box) -> bool:
    if _tag(el) != "rect" or el.get("transform"):
        return False
    if el.get("width") == "100%":
        return True
    return (_num(el.get("x")) <= box[0] and _num(el.get("y")) <= box[1] and _num(el.get("width")) >= box[2]
            and _num(el.get("height")) >= box[3])


def build(root, ref_box: tuple | None = None) -> Doc:
    box = viewbox(root)
    # candidate coordinates in reference units: (x - offset) * scale
    scale = ref_box[2] / box[2] if ref_box else 1.0
    offset = (box[0] - ref_box[0] / scale, box[1] - ref_box[1] / scale) if ref_box else (0.0, 0.0)
    nodes: list[Node] = []
    background = None
    gradients: dict[str, list[str]] = {}
    groups: list = []

    def walk(el, inherited: dict, group):
        nonlocal background
        for child in el:
            tag = _tag(child)
            if not tag or tag in _SKIP:
                if tag in ("linearGradient", "radialGradient") or tag == "defs":
                    for grad in child.iter():
                        if _tag(grad) in ("linearGradient", "radialGradient") and grad.get("id"):
                            gradients[grad.get("id")] = [_color(_style_attrs(s).get("stop-color", "black"))
                                                         for s in grad if _tag(s) == "stop"]
                continue
            attrs = _style_attrs(child)
            if tag in ("g", "a", "switch"):
                inner = {**inherited, **{k: v for k, v in attrs.items() if k in _INHERITED}}
                if tag == "g":
                    groups.append(child)
                walk(child, inner, child if tag == "g" else group)
                continue
            if tag not in _SHAPES:
                continue
            node = Node(child, tag, len(nodes), attrs, dict(inherited), group, parse_transform(attrs.get("transform")),
                        scale, offset)
            if background is None and not nodes and _is_background(child, box) and group is None:
                background = node
                continue
            nodes.append(node)

    walk(root, {}, None)
    return Doc(root, box[2], box, nodes, background, gradients, groups)


# ------------------------------------------------------------------------------------------ geometry
def _pairs_of(node: Node) -> tuple[list[str], list[tuple[float, float]], list[float]]:
    """(command letters, vertex pairs, other numbers) of a line, polyline, polygon or path, in ref units."""
    if node.tag == "line":
        pts = [(_num(node.attrs.get("x1")), _num(node.attrs.get("y1"))),
               (_num(node.attrs.get("x2")), _num(node.attrs.get("y2")))]
        return [], [node.coord(*p) for p in pts], []
    if node.tag in ("polyline", "polygon"):
        nums = [float(n) for n in _NUM.findall(node.attrs.get("points", ""))]
        return [], [node.coord(x, y) for x, y in zip(nums[0::2], nums[1::2])], []
    tokens = re.findall(r"[A-Za-z]|" + _NUM.pattern, node.attrs.get("d", ""))
    commands, pairs, other = [], [], []
    command, run = "M", []

    def flush():
        step = 7 if command in "Aa" else 2 if command not in "HhVvZz" else 0
        used = set()
        if step:
            for k in range(0, len(run) - step + 1, step):
                x, y = float(run[k + step - 2]), float(run[k + step - 1])
                # relative commands move by offsets: scale only; absolute ones are positions
                pairs.append(node.coord(x, y) if command.isupper() else (x * node.scale, y * node.scale))
                used |= {k + step - 2, k + step - 1}
        other.extend(float(v) * (node.scale if command in "HhVv" else 1.0) for k, v in enumerate(run)
                     if k not in used)

    for t in tokens + ["Z"]:
        if t.isalpha():
            flush()
            command, run = t, []
            commands.append(t.upper())
        else:
            run.append(t)
    return commands[:-1], pairs, other


def center(node: Node) -> tuple[float, float]:
    """Centre in the element's parent coordinates (own transform applied), reference units."""
    t, a = node.tag, node.attrs
    if t == "rect":
        c = node.coord(_num(a.get("x")) + _num(a.get("width")) / 2, _num(a.get("y")) + _num(a.get("height")) / 2)
    elif t in ("circle", "ellipse"):
        c = node.coord(_num(a.get("cx")), _num(a.get("cy")))
    elif t in ("text", "image", "use"):
        c = node.coord(_num(a.get("x")), _num(a.get("y")))
    else:
        _, pts, _ = _pairs_of(node)
        c = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)) if pts else (0.0, 0.0)
    m = node.matrix
    moved = _apply((m[0], m[1], m[2], m[3], m[4] * node.scale, m[5] * node.scale), c)
    return moved


def _own_points(node: Node) -> list[tuple[float, float]]:
    """Points outlining the element in its own coordinates (reference units)."""
    t, a = node.tag, node.attrs
    if t == "rect":
        x, y, w, h = _num(a.get("x")), _num(a.get("y")), _num(a.get("width")), _num(a.get("height"))
        return [node.coord(x, y), node.coord(x + w, y + h), node.coord(x + w, y), node.coord(x, y + h)]
    if t in ("circle", "ellipse"):
        cx, cy = _num(a.get("cx")), _num(a.get("cy"))
        rx = _num(a.get("r" if t == "circle" else "rx"))
        ry = _num(a.get("r" if t == "circle" else "ry"))
        return [node.coord(cx - rx, cy - ry), node.coord(cx + rx, cy + ry)]
    if t in ("text", "image", "use"):
        return [node.coord(_num(a.get("x")), _num(a.get("y")))]
    return _pairs_of(node)[1]


def _rotates_in_place(e: Node, m_f: Matrix, size: float) -> bool:
    """Whether the candidate's transform turns the element about a point on or near it (the edit engine's
    rotation about the element's centre): then the rotation says it all, and no shift is reported."""
    a, b, c, d, tx, ty = e.matrix
    m_e = (a, b, c, d, tx * e.scale, ty * e.scale)
    det = a * d - b * c
    if abs(det) < 1e-12:
        return False
    inv = (d / det, -b / det, -c / det, a / det, (c * m_e[5] - d * m_e[4]) / det, (b * m_e[4] - a * m_e[5]) / det)
    t = _mul(m_f, inv)  # parent → parent: where the candidate puts what the reference put at a point
    la, lb, lc, ld, le, lf = t
    # fixed point p: (I - L) p = translation
    m00, m01, m10, m11 = 1 - la, -lc, -lb, 1 - ld
    det2 = m00 * m11 - m01 * m10
    if abs(det2) < 1e-9:
        return False
    px, py = (m11 * le - m01 * lf) / det2, (m00 * lf - m10 * le) / det2
    pts = [_apply(m_e, p) for p in _own_points(e)]
    if not pts:
        return False
    margin = 0.1 * size
    return (min(p[0] for p in pts) - margin <= px <= max(p[0] for p in pts) + margin
            and min(p[1] for p in pts) - margin <= py <= max(p[1] for p in pts) + margin)


def extent(node: Node) -> float:
    """A characteristic size of the element (reference units) for pairing."""
    t = node.tag
    if t == "rect":
        return math.sqrt(max(node.length("width"), 0.01) * max(node.length("height"), 0.01))
    if t == "circle":
        return max(node.length("r"), 0.01)
    if t == "ellipse":
        return math.sqrt(max(node.length("rx"), 0.01) * max(node.length("ry"), 0.01))
    if t == "text":
        return _num(node.prop("font-size"), 16.0) * node.scale
    _, pts, _ = _pairs_of(node)
    if not pts:
        return 0.01
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return max(math.hypot(max(xs) - min(xs), max(ys) - min(ys)), 0.01)


# ------------------------------------------------------------------------------------------ paint
def _color(value: str | None) -> str:
    v = (value or "").strip().lower().replace(" ", "")
    if v.startswith("#") and len(v) == 4:
        v = "#" + "".join(ch * 2 for ch in v[1:])
    if re.fullmatch(r"[a-z]+", v) and v not in ("none", "currentcolor", "transparent", "inherit"):
        try:
            # matplotlib is a heavy optional dependency: only its colour parser, and only for a named colour
            from matplotlib.colors import to_hex

            return to_hex(v)
        except (ImportError, ValueError):
            return v
    return v


def paint_name(value: str | None) -> str:
    """As the edit engine names a paint: 'red' for a palette hex, 'unfilled', 'gradient-filled'."""
    if not value or value == "none":
        return "unfilled"
    if value.startswith("url("):
        return "gradient-filled"
    return COLOR_NAME.get(value.lower(), value)


def _fill(node: Node) -> str:
    return node.prop("fill", "none" if node.tag == "line" else "black")


def _stroke(node: Node) -> str:
    return node.prop("stroke", "none")


def _filled(node: Node) -> bool:
    return node.tag != "line" and _color(_fill(node)) not in ("none", "transparent")


def _stroked(node: Node) -> bool:
    return _color(_stroke(node)) not in ("none", "transparent")


def _same_paint(a: str, b: str) -> bool:
    return _color(a) == _color(b)


# --------------------------------------------------------------------------------------------- pairing
def _similarity(e: Node, f: Node, size: float, n_ref: int, n_cand: int) -> float:
    if e.tag != f.tag:
        return 0.0
    (x1, y1), (x2, y2) = center(e), center(f)
    pos = max(0.0, 1.0 - math.hypot(x2 - x1, y2 - y1) / (0.5 * size))
    s1, s2 = extent(e), extent(f)
    ext = min(s1, s2) / max(s1, s2)
    keys = ("fill", "stroke", "stroke-width", "opacity", "stroke-dasharray")
    style = sum(_same_paint(e.prop(k, ""), f.prop(k, "")) for k in keys) / len(keys)
    order = 1.0 - abs(e.order / max(1, n_ref - 1) - f.order / max(1, n_cand - 1))
    score = 0.3 + 0.25 * pos + 0.15 * ext + 0.2 * style + 0.1 * order
    if e.tag == "text":
        score = 0.5 * score + 0.5 * (1.0 if e.text == f.text else 0.5 if is_typo(e.text, f.text) else 0.0)
    return score


def _pair(ref: Doc, cand: Doc) -> dict[int, int]:
    """Hungarian pairing of same-kind elements (ref order → cand order)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    if not ref.nodes or not cand.nodes:
        return {}
    sim = np.array([[_similarity(e, f, ref.size, len(ref.nodes), len(cand.nodes)) for f in cand.nodes]
                    for e in ref.nodes])
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return {int(i): int(j) for i, j in zip(rows, cols) if sim[i, j] > 0}


def _kept_in_order(pairs: dict[int, int]) -> set[int]:
    """Ref indices of the longest run kept in painting order; among equally long runs the one that leaves the
    elements whose position rose outside (an element moved up the stack is the one that moved)."""
    items = sorted(pairs.items())
    n = len(items)
    if n == 0:
        return set()
    length = [1] * n
    prev = [-1] * n
    for i in range(n):
        for j in range(i):
            if items[j][1] < items[i][1] and (length[j] + 1 > length[i]
                                              or (length[j] + 1 == length[i] and items[j][1] < items[prev[i]][1])):
                length[i], prev[i] = length[j] + 1, j
    best = max(range(n), key=lambda i: (length[i], -items[i][1]))
    kept, i = set(), best
    while i >= 0:
        kept.add(items[i][0])
        i = prev[i]
    return kept


# ------------------------------------------------------------------------------------------------ diff
def diff(reference_code: str, candidate_code: str) -> list[dict]:
    try:
        ref_root = parse(reference_code)
    except CandidateUnparseable as e:
        raise StructuralDiffError(f"the SVG reference cannot be parsed: {e}") from None
    try:
        cand_root = parse(candidate_code)
    except CandidateUnparseable as e:
        return unparseable_candidate(TASK, str(e))
    ref = build(ref_root)
    cand = build(cand_root, ref.box)
    out = Findings(TASK)
    _canvas(ref, cand, out)
    _background(ref, cand, out)
    _gradients(ref, cand, out)
    pairs = _pair(ref, cand)
    copies = _presence(ref, cand, pairs, out)
    _painting_order(ref, cand, pairs, out)
    _groups(ref, cand, pairs, out)
    for i, j in sorted(pairs.items()):
        _compare(ref.nodes[i], cand.nodes[j], ref.size, out)
    for e, copy in copies:  # a copy changed besides its offset (an edit of the copy)
        _compare(e, copy, ref.size, out)
    return out.dicts()


def _what(node: Node, size: float) -> str:
    return describe(node.el, size)


def _canvas(ref: Doc, cand: Doc, out: Findings) -> None:
    ra, ca = ref.box[3] / ref.box[2], cand.box[3] / cand.box[2]
    if abs(ra - ca) > 0.02 * ra:
        out.add("structure", 2, "whole image", f"The canvas is {_fmt(cand.box[2])} × {_fmt(cand.box[3])} units "
                f"instead of {_fmt(ref.box[2])} × {_fmt(ref.box[3])}, so the picture is stretched.")


def _background(ref: Doc, cand: Doc, out: Findings) -> None:
    old = ref.background.prop("fill", "black") if ref.background else None
    new = cand.background.prop("fill", "black") if cand.background else None
    if old is not None and new is None:
        out.add("structure", 2, "canvas background",
                f"The {paint_name(old)} background is missing; the canvas is blank.")
    elif old is None and new is not None:
        out.add("structure", 2, "canvas background", f"An extra {paint_name(new)} background fills the canvas.")
    elif old is not None and not _same_paint(old, new):
        out.add("style", 2, "canvas background", f"The fill is {paint_name(new)} instead of {paint_name(old)}.")


def _gradients(ref: Doc, cand: Doc, out: Findings) -> None:
    for gid, stops in ref.gradients.items():
        other = cand.gradients.get(gid)
        if other is None or len(other) != len(stops):
            continue  # a missing gradient shows as a fill difference of the shapes using it
        for old, new in zip(stops, other):
            if old != new:
                out.add("style", 2, f"gradient '{gid}'",
                        f"A gradient colour is {paint_name(new)} instead of {paint_name(old)}.")


def _presence(ref: Doc, cand: Doc, pairs: dict[int, int], out: Findings) -> list[tuple[Node, Node]]:
    """Missing, extra and copied elements; returns (reference element, its copy re-based on the element's
    own transform) for the copies, and may re-pair an element with its original when it took the copy."""
    copy_pairs: list[tuple[Node, Node]] = []
    paired_cand = set(pairs.values())
    missing = [i for i in range(len(ref.nodes)) if i not in pairs]
    extra = [j for j in range(len(cand.nodes)) if j not in paired_cand]
    # whole groups: a group none of whose elements is paired, when the candidate has fewer such groups
    reported: set[int] = set()

    def orphan_groups(doc: Doc, unpaired: set[int]) -> list:
        groups = []
        for g in doc.groups:
            if any(a in groups for a in g.iterancestors()):
                continue  # inside a group already counted
            members = [n.order for n in doc.nodes if g in n.el.iterancestors()]
            if all(k in unpaired for k in members):
                groups.append(g)
        return groups

    ref_orphans = orphan_groups(ref, set(missing))
    cand_orphans = orphan_groups(cand, set(extra))
    for g in ref_orphans[len(cand_orphans):] if len(ref_orphans) > len(cand_orphans) else []:
        members = [n.order for n in ref.nodes if g in n.el.iterancestors()]
        if not members:
            continue
        what = describe(g, ref.size)
        out.add("structure", 3, what, f"A whole {what} is missing.")
        reported |= set(members)
    # copies: an extra element like a reference element but shifted; it is compared with that element too
    copies: set[int] = set()
    for j in extra:
        f = cand.nodes[j]
        options = []  # (similarity, ref index, the copy's index, the copy re-based)
        for i, e in enumerate(ref.nodes):
            copy = _rebased(e, f)
            if copy is not None:
                options.append((_similarity(e, copy, ref.size, 1, 1), i, j, copy))
            k = pairs.get(i)
            paired_copy = _rebased(e, cand.nodes[k]) if k is not None else None
            if paired_copy is not None and e.tag == f.tag and _rebased(e, f) is None and not _is_shifted(e, f):
                # the pairing took the shifted copy for the original, and this is the original
                options.append((_similarity(e, f, ref.size, 1, 1), i, k, paired_copy))
        if not options:
            continue
        score, i, copy_index, copy = max(options, key=lambda o: o[0])
        if score < 0.6:
            continue
        if copy_index != j:
            pairs[i] = j
        what = _what(ref.nodes[i], ref.size)
        out.add("structure", 2, what, f"An extra copy of the {what} appears, offset from the original.")
        copy_pairs.append((ref.nodes[i], copy))
        copies.add(j)
    extra = [j for j in extra if j not in copies]
    missing = [i for i in missing if i not in reported]
    # a shape of another kind in about the same place: drawn as the wrong kind, not missing + extra
    for i in list(missing):
        e = ref.nodes[i]
        if e.tag == "text":
            continue
        close = [j for j in extra if cand.nodes[j].tag != "text"
                 and math.dist(center(e), center(cand.nodes[j])) <= 0.2 * ref.size]
        if close:
            j = min(close, key=lambda j: math.dist(center(e), center(cand.nodes[j])))
            what = _what(e, ref.size)
            out.add("structure", 2, what, f"The {what} is drawn as a {cand.nodes[j].tag} instead of a {e.tag}.")
            missing.remove(i)
            extra.remove(j)
    for i in missing:
        e = ref.nodes[i]
        if e.tag == "text":
            out.add("text_symbol", 3, f"text '{e.text}'", f"The text '{e.text}' is missing.")
            continue
        what = _what(e, ref.size)
        big = e.tag in ("rect", "circle", "ellipse", "polygon", "path") and e.el.get("fill") not in (None, "none")
        out.add("structure", 3 if big else 2, what, f"The {what} is missing.")
    for j in extra:
        f = cand.nodes[j]
        if f.tag == "text":
            out.add("text_symbol", 2, f"text '{f.text}'", f"An extra text '{f.text}' appears.")
            continue
        what = _what(f, ref.size)
        out.add("structure", 2, f"extra {what}", f"An extra {what} appears.")

    return copy_pairs

def _relative(e: Node, f: Node) -> Matrix:
    """f's transform relative to e's, in reference units (parent space to parent space)."""
    a, b, c, d, tx, ty = e.matrix
    det = a * d - b * c
    if abs(det) < 1e-12:
        return IDENTITY
    inv = (d / det, -b / det, -c / det, a / det, (c * ty - d * tx) / det, (b * tx - a * ty) / det)
    m_f = f.matrix[:4] + (f.matrix[4] * f.scale, f.matrix[5] * f.scale)
    return _mul(m_f, inv)


def _is_shifted(e: Node, f: Node) -> bool:
    r = _relative(e, f)
    return math.hypot(r[4], r[5]) > 1e-6


def _rebased(e: Node, f: Node) -> Node | None:
    """f with e's transform when f's differs from it by a translation only (f a shifted copy of e), else None."""
    if e.tag != f.tag:
        return None
    r = _relative(e, f)
    if abs(r[0] - 1) > 1e-6 or abs(r[1]) > 1e-6 or abs(r[2]) > 1e-6 or abs(r[3] - 1) > 1e-6 or not _is_shifted(e, f):
        return None
    m = e.matrix[:4] + (e.matrix[4] / f.scale, e.matrix[5] / f.scale)
    return replace(f, matrix=m)


def _painting_order(ref: Doc, cand: Doc, pairs: dict[int, int], out: Findings) -> None:
    kept = _kept_in_order(pairs)
    for i, j in sorted(pairs.items()):
        if i in kept:
            continue
        # compared with the kept elements it was between in the reference: now above or below them?
        before = [pairs[k] for k in kept if k < i]
        after = [pairs[k] for k in kept if k > i]
        what = _what(ref.nodes[i], ref.size)
        if after and j > min(after):
            out.add("structure", 2, what, f"The {what} is drawn on top of elements it should be behind.")
        elif before and j < max(before):
            out.add("structure", 2, what, f"The {what} is drawn behind elements it should be on top of.")


def _groups(ref: Doc, cand: Doc, pairs: dict[int, int], out: Findings) -> None:
    """Group transforms and opacities, for groups whose elements mostly went to one candidate group."""
    from collections import Counter

    for g in ref.groups:
        members = [n for n in ref.nodes if n.group is g]
        partners = Counter(cand.nodes[pairs[n.order]].group for n in members if n.order in pairs)
        if not partners:
            continue
        h, _ = partners.most_common(1)[0]
        what = describe(g, ref.size)
        m_ref = parse_transform(g.get("transform"))
        m_cand = parse_transform(h.get("transform")) if h is not None else IDENTITY
        m_cand = m_cand[:4] + (m_cand[4] * cand.nodes[0].scale, m_cand[5] * cand.nodes[0].scale)
        local = [center(n) for n in members] or [(0.0, 0.0)]
        c = (sum(p[0] for p in local) / len(local), sum(p[1] for p in local) / len(local))
        _transform_change(what, m_ref, m_cand, _apply(m_ref, c), _apply(m_cand, c), ref.size, out, rotatable=True)
        g_attrs = _style_attrs(g)
        h_attrs = _style_attrs(h) if h is not None else {}
        for key, words in (("opacity", "opacity"), ("fill-opacity", "fill opacity")):
            old, new = _num(g_attrs.get(key), 1.0), _num(h_attrs.get(key), 1.0)
            if abs(old - new) > 0.02:
                out.add("style", 1, what, f"The {what} has {words} {_fmt(new)} instead of {_fmt(old)}.")


def _transform_change(what: str, m_ref: Matrix, m_cand: Matrix, p_ref, p_cand, size: float, out: Findings,
                      rotatable: bool, in_place=None) -> bool:
    """Rotation, scale and shift of cand against ref; returns whether the position was reported as moved.
    `in_place()` says whether a rotation turns the element about a point on it (no shift reported then)."""
    angle, scale, similar = _relative_linear(m_ref, m_cand)
    if similar and abs(angle) >= 1.0:
        if rotatable:
            out.add("shape", 1 if abs(angle) <= 12 else 2, what, f"The {what} is rotated by {round(angle)}°.")
        if in_place is not None and in_place():
            return False
    if abs(scale - 1.0) > 0.02:
        how = "larger" if scale > 1 else "smaller"
        out.add("shape", scale_severity(scale - 1), what, f"The {what} is {how} (scale × {round(scale, 2):g}).")
    elif not similar:
        out.add("shape", 2, what, f"The {what} is skewed or stretched.")
    return _shift(what, p_ref, p_cand, size, out)


def _shift(what: str, p_ref, p_cand, size: float, out: Findings) -> bool:
    dx, dy = p_cand[0] - p_ref[0], p_cand[1] - p_ref[1]
    dist = math.hypot(dx, dy)
    rel = dist / size
    if rel < 0.01:
        return False
    sev = 1 if rel <= 0.04 else 2 if rel <= 0.12 else 3
    words = []
    if abs(dx) >= 0.2 * dist:
        words.append("right" if dx > 0 else "left")
    if abs(dy) >= 0.2 * dist:
        words.append("down" if dy > 0 else "up")
    out.add("shape", sev, what, f"The {what} is shifted {' and '.join(words)} by about {round(100 * rel)} % of the canvas.")
    return True


_SIZE_ATTRS = {"rect": ("width", "height"), "circle": ("r",), "ellipse": ("rx", "ry")}


def _compare(e: Node, f: Node, size: float, out: Findings) -> None:
    what = _what(e, size) if e.tag != "text" else f"text '{e.text}'"
    _compare_shape(e, f, what, size, out)
    _compare_style(e, f, what, out)
    if e.tag == "text":
        _compare_text(e, f, out)


def _compare_shape(e: Node, f: Node, what: str, size: float, out: Findings) -> None:
    outline_changed = False
    if e.tag in ("line", "polyline", "polygon", "path"):
        ce, pe, oe = _pairs_of(e)
        cf, pf, of = _pairs_of(f)
        tol = 0.005 * size
        if ce != cf or len(pe) != len(pf) or len(oe) != len(of) or any(abs(a - b) > 0.01 * max(1, abs(a))
                                                                         for a, b in zip(oe, of)):
            out.add("shape", 2, what, f"The outline of the {what} has a different shape.")
            outline_changed = True
        elif pe:
            deltas = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(pe, pf)]
            mx = sum(d[0] for d in deltas) / len(deltas)
            my = sum(d[1] for d in deltas) / len(deltas)
            uneven = [k for k, d in enumerate(deltas) if math.hypot(d[0] - mx, d[1] - my) > tol]
            if uneven:
                moved = [k for k, d in enumerate(deltas) if math.hypot(*d) > tol]
                k = len(moved) or len(uneven)
                desc = (f"One vertex of the {what} is out of place, distorting its outline." if k == 1 else
                        f"{k} vertices of the {what} are out of place, distorting its outline.")
                out.add("shape", 2, what, desc)
                outline_changed = True
    attrs = _SIZE_ATTRS.get(e.tag, ())
    factors = {}
    for a in attrs:
        old, new = e.length(a), f.length(a)
        if old > 0 and abs(new / old - 1) > 0.02:
            factors[a] = new / old
    if factors:
        vals = list(factors.values())
        dims = " and ".join(factors)
        worst = max(vals, key=lambda v: abs(v - 1))
        if all(abs(v - vals[0]) < 0.03 for v in vals):
            how = "larger" if vals[0] > 1 else "smaller"
            out.add("shape", scale_severity(worst - 1), what, f"The {what} is {how} ({dims} × {round(vals[0], 2):g}).")
        else:
            parts = " and ".join(f"{a} × {round(v, 2):g}" for a, v in factors.items())
            out.add("shape", scale_severity(worst - 1), what, f"The {what} has a different size ({parts}).")
    if e.tag == "rect":
        r_old = e.length("rx") or e.length("ry")
        r_new = f.length("rx") or f.length("ry")
        if r_old == 0 and r_new > 0:
            out.add("shape", 1, what, f"The {what} has rounded corners instead of square ones.")
        elif r_old > 0 and r_new == 0:
            out.add("shape", 1, what, f"The {what} has square corners instead of rounded ones.")
        elif r_old > 0 and abs(r_new / r_old - 1) > 0.2:
            more = "more" if r_new > r_old else "less"
            out.add("shape", 1, what, f"The corners of the {what} are {more} rounded (radius {_fmt(r_new)} "
                                      f"instead of {_fmt(r_old)}).")
    if e.tag == "text":
        old, new = e.prop("text-anchor", "start"), f.prop("text-anchor", "start")
        if old != new:
            out.add("shape", 1, what, f"The {what} is anchored at the {new} instead of the {old}.")
    p_ref, p_cand = center(e), center(f)
    if outline_changed:
        p_cand = p_ref
    m_f = f.matrix[:4] + (f.matrix[4] * f.scale, f.matrix[5] * f.scale)
    _transform_change(what, e.matrix, m_f, p_ref, p_cand, size, out, rotatable=e.tag != "circle",
                      in_place=lambda: not outline_changed and _rotates_in_place(e, m_f, size))


def _compare_style(e: Node, f: Node, what: str, out: Findings) -> None:
    outline_only = not _filled(e)
    if e.tag != "line":
        old, new = _fill(e), _fill(f)
        if _filled(e) and not _filled(f):
            out.add("style", 2, what, f"The {what} is drawn as an outline, not filled.")
            return  # the outline it gained is part of the same change
        if not _filled(e) and _filled(f):
            out.add("style", 2, what, f"The {what} is filled with {paint_name(new)} instead of being an outline.")
        elif _filled(e) and not _same_paint(old, new):
            out.add("style", 2, what, f"The fill is {paint_name(new)} instead of {paint_name(old)}.")
    sev = 2 if outline_only else 1
    old, new = _stroke(e), _stroke(f)
    if _stroked(e) and not _stroked(f):
        out.add("style", sev, what, f"The {what} has no outline; it should be {paint_name(old)}.")
    elif not _stroked(e) and _stroked(f):
        out.add("style", 1, what, f"The {what} has a {paint_name(new)} outline that should not be there.")
    elif _stroked(e):
        if not _same_paint(old, new):
            out.add("style", sev, what, f"The outline is {paint_name(new)} instead of {paint_name(old)}.")
        w_old = _num(e.prop("stroke-width"), 1.0) * e.scale
        w_new = _num(f.prop("stroke-width"), 1.0) * f.scale
        if abs(w_new - w_old) > 0.05 * max(w_old, 0.1):
            out.add("style", 1, what, f"The outline is {'thicker' if w_new > w_old else 'thinner'} "
                                      f"({_fmt(w_new)} instead of {_fmt(w_old)}).")
        d_old, d_new = e.prop("stroke-dasharray", "none"), f.prop("stroke-dasharray", "none")
        if d_old in ("none", "") and d_new not in ("none", ""):
            out.add("style", 1, what, f"The outline of the {what} is dashed instead of solid.")
        elif d_old not in ("none", "") and d_new in ("none", ""):
            out.add("style", 1, what, f"The outline of the {what} is solid instead of dashed.")
        elif _NUM.findall(d_old) != _NUM.findall(d_new):
            out.add("style", 1, what, f"The dash pattern of the {what} is '{d_new}' instead of '{d_old}'.")
        c_old, c_new = e.prop("stroke-linecap", "butt"), f.prop("stroke-linecap", "butt")
        if c_old != c_new:
            out.add("style", 1, what, f"The line ends of the {what} are {c_new} instead of {c_old}.")
    for key, words in (("opacity", "opacity"), ("fill-opacity", "fill opacity"), ("stroke-opacity", "outline opacity")):
        old_s, new_s = e.attrs.get(key), f.attrs.get(key)
        old_v, new_v = _num(old_s, 1.0), _num(new_s, 1.0)
        if abs(old_v - new_v) <= 0.02:
            continue
        if key == "opacity" and old_v >= 1.0:
            out.add("style", 1, what, f"The {what} is translucent (opacity {new_s}) instead of opaque.")
        elif key == "opacity" and new_v >= 1.0:
            out.add("style", 1, what, f"The {what} is fully opaque instead of translucent (opacity {old_s}).")
        else:
            out.add("style", 1, what, f"The {what} has {words} {_fmt(new_v)} instead of {_fmt(old_v)}.")


def _compare_text(e: Node, f: Node, out: Findings) -> None:
    old, new = e.text, f.text
    where = f"text '{old}'"
    if old != new:
        out.add("text_symbol", 1 if is_typo(old, new) else 2, where, f"The text reads '{new}' instead of '{old}'.")
    size_old = _num(e.prop("font-size"), 16.0) * e.scale
    size_new = _num(f.prop("font-size"), 16.0) * f.scale
    if size_old > 0 and abs(size_new / size_old - 1) > 0.02:
        factor = size_new / size_old
        out.add("text_symbol", 1 if 0.7 <= factor <= 1.4 else 2, where,
                f"The text is {'larger' if factor > 1 else 'smaller'} (font size {_fmt(size_new)} "
                f"instead of {_fmt(size_old)}).")
    bold_old = (e.prop("font-weight") or "normal") in ("bold", "bolder", "600", "700", "800", "900")
    bold_new = (f.prop("font-weight") or "normal") in ("bold", "bolder", "600", "700", "800", "900")
    if bold_old and not bold_new:
        out.add("text_symbol", 1, where, "The text is regular weight instead of bold.")
    elif bold_new and not bold_old:
        out.add("text_symbol", 1, where, "The text is bold instead of regular weight.")
    fam_old, fam_new = e.prop("font-family") or "default", f.prop("font-family") or "default"
    if fam_old.strip("'\" ").lower() != fam_new.strip("'\" ").lower():
        out.add("text_symbol", 1, where, f"The typeface is {fam_new} instead of {fam_old}.")
    it_old = (e.prop("font-style") or "normal") in ("italic", "oblique")
    it_new = (f.prop("font-style") or "normal") in ("italic", "oblique")
    if it_old != it_new:
        out.add("text_symbol", 1, where, f"The text is {'italic' if it_new else 'upright'} instead of "
                                         f"{'italic' if it_old else 'upright'}.")
