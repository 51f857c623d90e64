"""Instructions to the critic, one per task, in our own words. The images come first in the message
(reference, then rendering); this text follows them. Kept here, never pasted into backends."""

from __future__ import annotations

from pipeline.critic.schema import CATEGORIES

_WHAT = {
    "chart": "a chart",
    "table": "a table",
    "svg": "an SVG graphic",
}

_CATEGORY_HELP = {
    "chart": {
        "structure": "chart type, subplot arrangement, axes, legend or grid present/absent or placed wrongly",
        "data": "plotted values, number of series or points, bar heights, line shapes, ordering",
        "text": "title, axis labels, tick labels, legend entries, annotations: missing or different wording",
        "style": "colours, markers, line styles, fonts, sizes, transparency, spacing",
    },
    "table": {
        "layout": "rows or columns missing/extra, merged cells, header structure, cell alignment",
        "text": "words in cells or headers missing, misspelt or different",
        "numeric": "numbers in cells that differ (digits, decimals, signs, units)",
    },
    "svg": {
        "structure": "overall composition, element grouping, layering, element count",
        "shape": "geometry of shapes and paths: position, size, outline, proportions",
        "style": "fill and stroke colours, stroke widths, opacity, gradients",
        "text_symbol": "text, digits, icons or symbols missing or different",
    },
}

_SEVERITY_HELP = (
    "severity 1 = minor (barely noticeable), 2 = medium (clearly visible but the content is still right), "
    "3 = severe (wrong or missing content, a reader would be misled)"
)

TEMPLATE = """The first image is the REFERENCE: {what}. The second image is a RENDERING of code that was \
written to reproduce it. Compare the rendering against the reference and list every visible discrepancy.

Use exactly these categories:
{categories}
Rate each discrepancy: {severities}.
For every discrepancy give its category, its severity, where it is ("location": the element, region, row or \
column) and a short description of what differs. Do not report differences in image size or resolution alone.

Answer with one JSON object and nothing else:
{{"errors": [{{"category": "<one of: {names}>", "severity": <1|2|3>, "location": "<where>", \
"description": "<what differs>"}}, ...], "counts": {{{count_keys}}}}}
"counts" gives the number of listed errors in each category. If the rendering matches the reference, answer \
with an empty "errors" list and all counts 0."""


def prompt(task: str) -> str:
    cats = CATEGORIES[task]
    return TEMPLATE.format(
        what=_WHAT[task],
        categories="\n".join(f"- {c}: {_CATEGORY_HELP[task][c]}" for c in cats),
        severities=_SEVERITY_HELP,
        names=", ".join(cats),
        count_keys=", ".join(f'"{c}": <n>' for c in cats),
    )


def messages(task: str) -> list[dict]:
    """Chat messages for one (reference, rendering) pair; the two images fill the two image slots in order."""
    return [{
        "role": "user",
        "content": [
            {"type": "text", "text": "Reference image:"},
            {"type": "image"},
            {"type": "text", "text": "Rendered image:"},
            {"type": "image"},
            {"type": "text", "text": prompt(task)},
        ],
    }]
