"""What the critic must answer, per task: a JSON Schema (for constrained decoding and validation) and the
matching pydantic models (for typed access). Both are built from the same categories and limits, so they
cannot drift apart; `tests/test_critic_schema.py` checks they accept and reject the same documents.

Answer shape (keys in this order, compact JSON):
    {"errors": [{"category": "data", "severity": 2, "location": "...", "description": "..."}, ...],
     "counts": {"structure": 0, "data": 1, "text": 0, "style": 0}}
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from pipeline.critic.config import JudgementLimits

# The paper's discrepancy categories (Visual-ERM / VC-RewardBench).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "chart": ("structure", "data", "text", "style"),
    "table": ("layout", "text", "numeric"),
    "svg": ("structure", "shape", "style", "text_symbol"),
}
SEVERITIES = (1, 2, 3)  # 1 minor, 2 medium, 3 severe

# Free text: printable characters of the Basic Multilingual Plane except the quote and the backslash — no
# escape sequences, no control characters (Python's json refuses raw ones, which xgrammar's plain string rule
# allows), no surrogates or emoji. So every character is ≤ 3 UTF-8 bytes and every answer has a computable
# length bound. Written as an alternation of ranges on purpose: xgrammar 0.2.8 builds a wrong UTF-8 automaton
# for one merged class (it then admits overlong/surrogate byte sequences that decode to U+FFFD), not for this.
_TEXT_CHAR = r"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[\u00a0-\u07ff]|[\u0800-\ud7ff]|[\ue000-\ufffd])"
MAX_BYTES_PER_CHAR = 3


# xgrammar 0.2.8 fails to compile a single bounded repetition of that alternation above ~130 characters
# (`grammar_functor.cc: Check failed: per_rule_fsm_hashes`), which the default 400-character descriptions hit.
# Longer bounds are spelled as blocks of _BLOCK characters: the same language, exactly 0..max_chars long.
_BLOCK = 100


def text_pattern(max_chars: int) -> str:
    if max_chars <= _BLOCK:
        return f"^{_TEXT_CHAR}{{0,{max_chars}}}$"
    full, rest = divmod(max_chars, _BLOCK)
    block = f"(?:{_TEXT_CHAR}{{{_BLOCK}}})"
    shorter = f"{block}{{0,{full - 1}}}{_TEXT_CHAR}{{0,{_BLOCK - 1}}}"  # 0 .. full*_BLOCK - 1 characters
    longest = f"{block}{{{full}}}{_TEXT_CHAR}{{0,{rest}}}"  # full*_BLOCK .. max_chars characters
    return f"^(?:{shorter}|{longest})$"


def json_schema(task: str, limits: JudgementLimits) -> dict[str, Any]:
    """The JSON Schema of one critic answer for `task`."""
    cats = list(CATEGORIES[task])
    error = {
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": cats},
            "severity": {"type": "integer", "enum": list(SEVERITIES)},
            "location": {"type": "string", "pattern": text_pattern(limits.max_location_chars)},
            "description": {"type": "string", "pattern": text_pattern(limits.max_description_chars)},
        },
        "required": ["category", "severity", "location", "description"],
        "additionalProperties": False,
    }
    counts = {
        "type": "object",
        "properties": {c: {"type": "integer", "minimum": 0, "maximum": limits.max_errors} for c in cats},
        "required": cats,
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{task}_judgement",
        "type": "object",
        "properties": {"errors": {"type": "array", "items": error, "maxItems": limits.max_errors},
                       "counts": counts},
        "required": ["errors", "counts"],
        "additionalProperties": False,
    }


def schema_json(task: str, limits: JudgementLimits) -> str:
    return json.dumps(json_schema(task, limits), sort_keys=False)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@lru_cache(maxsize=64)
def _models(task: str, max_errors: int, loc_chars: int, desc_chars: int) -> type[BaseModel]:
    cats = CATEGORIES[task]
    Loc = Annotated[str, StringConstraints(pattern=text_pattern(loc_chars))]
    Desc = Annotated[str, StringConstraints(pattern=text_pattern(desc_chars))]
    error_model = create_model(
        f"{task.capitalize()}Error",
        __base__=_Closed,
        category=(Literal[cats], ...),  # type: ignore[valid-type]
        severity=(Literal[SEVERITIES], ...),  # type: ignore[valid-type]
        location=(Loc, ...),
        description=(Desc, ...),
    )
    Count = Annotated[int, Field(ge=0, le=max_errors, strict=True)]
    counts_model = create_model(f"{task.capitalize()}Counts", __base__=_Closed, **{c: (Count, ...) for c in cats})
    return create_model(
        f"{task.capitalize()}Judgement",
        __base__=_Closed,
        errors=(Annotated[list[error_model], Field(max_length=max_errors)], ...),  # type: ignore[valid-type]
        counts=(counts_model, ...),
    )


def judgement_model(task: str, limits: JudgementLimits) -> type[BaseModel]:
    """The pydantic model of one answer (fields `errors: list[<Task>Error]`, `counts: <Task>Counts`)."""
    return _models(task, limits.max_errors, limits.max_location_chars, limits.max_description_chars)


def worst_case_tokens(task: str, limits: JudgementLimits) -> int:
    """An upper bound on the tokens of any schema-valid compact answer for a byte-level tokenizer (every
    token covers ≥ 1 byte): the longest document, text counted at 3 bytes a character, plus the stop token."""
    longest_cat = max(CATEGORIES[task], key=len)
    one = {"category": longest_cat, "severity": 3, "location": "", "description": ""}
    doc = {"errors": [one] * limits.max_errors,
           "counts": {c: limits.max_errors for c in CATEGORIES[task]}}
    skeleton = len(json.dumps(doc, separators=(",", ":")).encode())
    text = limits.max_errors * MAX_BYTES_PER_CHAR * (limits.max_location_chars + limits.max_description_chars)
    return skeleton + text + 1


# ---------------------------------------------------------------------------------------------------------
# Writing answers: what the critic is trained to emit (critic SFT targets) must be exactly what the
# constrained decoder admits and `parse_judgement` accepts, so training and serving cannot drift apart.
# ---------------------------------------------------------------------------------------------------------
_FORBIDDEN = {'"': "'", "\\": "/"}


def fit_text(text: str, max_chars: int) -> str:
    """`text` as the schema's free-text rule allows it: double quotes become single quotes, backslashes
    slashes, control characters and characters outside the Basic Multilingual Plane (or surrogates) spaces;
    then cut to `max_chars` (on a word boundary when one is near)."""
    out = []
    for ch in str(text):
        ch = _FORBIDDEN.get(ch, ch)
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000 or code > 0xFFFD:
            ch = " "
        out.append(ch)
    s = " ".join("".join(out).split())
    if len(s) > max_chars:
        cut = s[:max_chars]
        space = cut.rfind(" ")
        s = (cut[:space] if space >= max_chars * 0.6 else cut).rstrip()
    return s


def canonical_errors(task: str, errors: list[dict[str, Any]], limits: JudgementLimits) -> list[dict[str, Any]]:
    """Labels in the answer's field order with texts fitted to the limits; at most `limits.max_errors`
    (the first ones are kept). Raises ValueError for a category outside the task's set or a bad severity."""
    cats = CATEGORIES[task]
    out = []
    for k, e in enumerate(errors[: limits.max_errors]):
        category = e.get("category")
        if category not in cats:
            raise ValueError(f"error {k}: category {category!r} is not one of the {task} categories {list(cats)}")
        severity = e.get("severity")
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise ValueError(f"error {k}: severity {severity!r} is not one of {list(SEVERITIES)}")
        out.append({"category": category, "severity": int(severity),
                    "location": fit_text(e.get("location", ""), limits.max_location_chars),
                    "description": fit_text(e.get("description", ""), limits.max_description_chars)})
    return out


def serialize_answer(task: str, errors: list[dict[str, Any]], limits: JudgementLimits) -> str:
    """The compact JSON text a critic answers for these discrepancies (the schema's key order, separators
    (",", ":"), counts tallied from the list): byte for byte what the constrained decoder can produce."""
    errors = canonical_errors(task, errors, limits)
    counts = {c: sum(e["category"] == c for e in errors) for c in CATEGORIES[task]}
    return json.dumps({"errors": errors, "counts": counts}, separators=(",", ":"), ensure_ascii=False)
