"""TEDS / TEDS-S for tables, computed by the PyPI `table-recognition-metric` package (apted inside).

We only normalise the inputs the way OmniDocBench-style evaluations do, so that Markdown and HTML, <th> and
<td>, <thead>/<tbody> wrappers and inline formatting do not count as structural differences. The tree edit
distance itself is the library's.
"""

from __future__ import annotations

from typing import Optional

from lxml import etree, html
from markdown_it import MarkdownIt
from table_recognition_metric import TEDS as LibraryTEDS

# Wrappers and inline formatting that carry no table structure; their children/text are kept.
_UNWRAP_TAGS = ("thead", "tbody", "tfoot", "b", "strong", "i", "em", "u", "span", "font", "sup", "sub", "code")
_md = MarkdownIt("commonmark").enable("table")


def table_to_html(code: str) -> str:
    """HTML for a table given as HTML or as a Markdown pipe table."""
    return code if "<table" in code.lower() else _md.render(code)


def normalize_table_html(table_html: str) -> Optional[str]:
    """`<html><body><table>…</table></body></html>` with only tr/td cells and colspan/rowspan, or None if
    there is no table in the input."""
    if not table_html or not table_html.strip():
        return None
    try:
        doc = html.fromstring(table_html)
    except (etree.ParserError, ValueError):
        return None
    tables = [doc] if doc.tag == "table" else doc.xpath(".//table")
    if not tables:
        return None
    table = tables[0]
    for nested in table.xpath(".//table"):  # a cell holding a table: keep its text, drop its structure
        nested.drop_tag()
    etree.strip_tags(table, *_UNWRAP_TAGS)
    for el in table.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag == "th":
            el.tag = "td"
        spans = {}
        for attr in ("colspan", "rowspan"):
            value = (el.get(attr) or "").strip()
            if value.isdigit() and int(value) > 1:
                spans[attr] = value
        el.attrib.clear()
        el.attrib.update(spans)
    table.tail = None
    body = etree.tostring(table, encoding="unicode", method="html")
    return f"<html><body>{body}</body></html>"


def teds(predicted: Optional[str], reference: Optional[str], structure_only: bool = False) -> float:
    """TEDS (or TEDS-S with structure_only) of two tables, each HTML or a Markdown pipe table; 0.0 when either
    side has no table."""
    pred = normalize_table_html(table_to_html(predicted or ""))
    ref = normalize_table_html(table_to_html(reference or ""))
    if pred is None or ref is None:
        return 0.0
    return float(LibraryTEDS(structure_only=structure_only)(pred, ref))
