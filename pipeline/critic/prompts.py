"""The critic's chat messages: the instruction text (ours, one per task, or the user's from a file) and the
message layout (ours or the released model's). Every backend and the critic SFT build their prompts here,
never pasting text into backends.

Layouts (`reward.tasks.<task>.layout`):
  ours      one user turn: "Reference image:", image, "Rendered image:", image, instruction.
  released  as the official reward code sends it (InternLM/Visual-ERM): charts/SVG one user turn with the two
            images then the instruction (rl_scripts/reward_func/reward_utils.py: message_format); tables a
            system turn "You are a helpful assistant." and a user turn with the two images then
            "<image>\n<image>\n" + instruction (rl_scripts/reward_func/table_parse_rm_v2.py: compute_score,
            vlm_client_qa). Image handling of each layout: `images.prepare_pair`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.critic.config import OURS_FORMAT, AnswerFormat
from pipeline.sample import CATEGORIES

if TYPE_CHECKING:
    from pipeline.critic.config import RewardConfig

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


def _answer_section(task: str, fmt: AnswerFormat) -> str:
    """The "Answer with one JSON object" paragraph for an answer format other than ours."""
    cats = CATEGORIES[task]
    names = " | ".join(f"{c}{fmt.category_suffix}" for c in cats)
    example = {"category": f'"<one of: {names}>"', "severity": "<1|2|3>", "location": '"<where>"',
               "description": '"<what differs>"'}
    error = ", ".join(f'"{fmt.error_key(f)}": {example[f]}' for f in fmt.error_fields)
    if fmt.counts == "object":
        counts = [f'"{fmt.counts_key}": {{' + ", ".join(f'"{c}": <n>' for c in cats) + "}"]
    elif fmt.counts == "fields":
        counts = [f'"{fmt.count_name(c)}": <n>' for c in cats]
    else:
        counts = []
    errors = f'"errors": [{{{error}}}, ...]'
    body = ", ".join([*counts, errors] if fmt.counts_first else [errors, *counts])
    lines = ["Answer with one JSON object and nothing else:", f"{{{body}}}"]
    if not fmt.has_location:
        lines.append('Start each "description" with where the discrepancy is (the element, region, row or column).')
    if counts:
        lines.append("The counts give the number of listed errors in each category.")
    lines.append('If the rendering matches the reference, answer with an empty "errors" list'
                 + (" and all counts 0." if counts else "."))
    return "\n".join(lines)


def _ours(task: str, fmt: AnswerFormat) -> str:
    cats = CATEGORIES[task]
    text = TEMPLATE.format(
        what=_WHAT[task],
        categories="\n".join(f"- {c}: {_CATEGORY_HELP[task][c]}" for c in cats),
        severities=_SEVERITY_HELP,
        names=", ".join(cats),
        count_keys=", ".join(f'"{c}": <n>' for c in cats),
    )
    if fmt == OURS_FORMAT:
        return text
    head = text[: text.index("Answer with one JSON object")]
    return head + _answer_section(task, fmt)


@lru_cache(maxsize=16)
def _read_prompt(path: str) -> str:
    file = Path(os.path.expanduser(path))
    try:
        return file.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"critic prompt file {file}: {e}") from None


def prompt(task: str, cfg: RewardConfig | None = None) -> str:
    """The instruction for `task`: the configured prompt file's text, else ours, describing the configured
    answer format (`cfg` None: ours in our format, what the tiny critic's tokenizer and SFT read)."""
    if cfg is None:
        return _ours(task, OURS_FORMAT)
    settings = cfg.task_settings(task)
    if settings.prompt_file:
        return _read_prompt(settings.prompt_file)
    return _ours(task, cfg.answer_format(task))


RELEASED_TABLE_SYSTEM = "You are a helpful assistant."  # table_parse_rm_v2.py: vlm_client_qa
RELEASED_TABLE_PREFIX = "<image>\n<image>\n"  # table_parse_rm_v2.py: compute_score


def layout(task: str, cfg: RewardConfig | None = None) -> str:
    return cfg.task_settings(task).layout if cfg is not None else "ours"


def messages(task: str, cfg: RewardConfig | None = None) -> list[dict]:
    """Chat messages for one (reference, rendering) pair under the task's layout; the two images fill the
    two image slots in order. Text parts are {"type": "text"} items (what processors' chat templates read)."""
    text = prompt(task, cfg)
    if layout(task, cfg) == "released":
        if task == "table":
            return [{"role": "system", "content": [{"type": "text", "text": RELEASED_TABLE_SYSTEM}]},
                    {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                 {"type": "text", "text": RELEASED_TABLE_PREFIX + text}]}]
        return [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}]}]
    return [{
        "role": "user",
        "content": [
            {"type": "text", "text": "Reference image:"},
            {"type": "image"},
            {"type": "text", "text": "Rendered image:"},
            {"type": "image"},
            {"type": "text", "text": text},
        ],
    }]
