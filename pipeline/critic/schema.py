"""What the critic must answer, per task and answer format: a JSON Schema (for constrained decoding and
validation) and the matching pydantic models (for typed access). Both are built from the same categories,
limits and format, so they cannot drift apart; `tests/test_critic_schema.py` checks they accept and reject
the same documents.

Answer shape in our format (keys in this order, compact JSON):
    {"errors": [{"category": "data", "severity": 2, "location": "...", "description": "..."}, ...],
     "counts": {"structure": 0, "data": 1, "text": 0, "style": 0}}
and in the released model's (`AnswerFormat` in config.py):
    {"structure_error_count": 0, "data_error_count": 1, ..., "errors": [{"category": "data_error", ...}]}
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from pipeline.critic.config import OURS_FORMAT, AnswerFormat
from pipeline.sample import CATEGORIES, SEVERITIES, JudgementLimits

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


def _error_schema(task: str, limits: JudgementLimits, fmt: AnswerFormat) -> dict[str, Any]:
    rules = {
        "category": {"type": "string", "enum": [f"{c}{fmt.category_suffix}" for c in CATEGORIES[task]]},
        "severity": {"type": "integer", "enum": list(SEVERITIES)},
        "location": {"type": "string", "pattern": text_pattern(limits.max_location_chars)},
        "description": {"type": "string", "pattern": text_pattern(limits.max_description_chars)},
    }
    keys = [fmt.error_key(f) for f in fmt.error_fields]
    return {"type": "object", "properties": {fmt.error_key(f): rules[f] for f in fmt.error_fields},
            "required": keys, "additionalProperties": False}


def _count_schema(limits: JudgementLimits) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": limits.max_errors}


def json_schema(task: str, limits: JudgementLimits, fmt: AnswerFormat | None = None) -> dict[str, Any]:
    """The JSON Schema of one critic answer for `task` in answer format `fmt` (None = ours). Properties are
    listed in the answer's key order: xgrammar (HF backend, vLLM structured outputs) emits them in that order."""
    fmt = fmt or OURS_FORMAT
    cats = list(CATEGORIES[task])
    errors = {"type": "array", "items": _error_schema(task, limits, fmt), "maxItems": limits.max_errors}
    counts: dict[str, Any] = {}
    if fmt.counts == "object":
        counts = {fmt.counts_key: {"type": "object", "properties": {c: _count_schema(limits) for c in cats},
                                   "required": cats, "additionalProperties": False}}
    elif fmt.counts == "fields":
        counts = {fmt.count_name(c): _count_schema(limits) for c in cats}
    properties = {**counts, "errors": errors} if fmt.counts_first else {"errors": errors, **counts}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{task}_judgement",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def schema_json(task: str, limits: JudgementLimits, fmt: AnswerFormat | None = None) -> str:
    return json.dumps(json_schema(task, limits, fmt), sort_keys=False)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@lru_cache(maxsize=64)
def _models(task: str, max_errors: int, loc_chars: int, desc_chars: int, fmt_json: str) -> type[BaseModel]:
    fmt = AnswerFormat.model_validate_json(fmt_json)
    cats = CATEGORIES[task]
    Loc = Annotated[str, StringConstraints(pattern=text_pattern(loc_chars))]
    Desc = Annotated[str, StringConstraints(pattern=text_pattern(desc_chars))]
    names = tuple(f"{c}{fmt.category_suffix}" for c in cats)
    types = {"category": Literal[names], "severity": Literal[SEVERITIES], "location": Loc,  # type: ignore[valid-type]
             "description": Desc}
    # Field names are the format's keys (aliases keep names like "type" or "x-y" usable).
    error_model = create_model(
        f"{task.capitalize()}Error", __base__=_Closed,
        **{f"f_{f}": (types[f], Field(..., alias=fmt.error_key(f))) for f in fmt.error_fields},
    )
    Count = Annotated[int, Field(ge=0, le=max_errors, strict=True)]
    fields: dict[str, Any] = {
        "f_errors": (Annotated[list[error_model], Field(max_length=max_errors)], Field(..., alias="errors"))}  # type: ignore[valid-type]
    if fmt.counts == "object":
        counts_model = create_model(f"{task.capitalize()}Counts", __base__=_Closed,
                                    **{f"c_{c}": (Count, Field(..., alias=c)) for c in cats})
        fields["f_counts"] = (counts_model, Field(..., alias=fmt.counts_key))
    elif fmt.counts == "fields":
        fields.update({f"c_{c}": (Count, Field(..., alias=fmt.count_name(c))) for c in cats})
    return create_model(f"{task.capitalize()}Judgement", __base__=_Closed, **fields)


def judgement_model(task: str, limits: JudgementLimits, fmt: AnswerFormat | None = None) -> type[BaseModel]:
    """The pydantic model of one answer in format `fmt` (fields aliased by the format's keys)."""
    return _models(task, limits.max_errors, limits.max_location_chars, limits.max_description_chars,
                   (fmt or OURS_FORMAT).model_dump_json())


def read_answer(task: str, parsed: BaseModel, fmt: AnswerFormat | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(errors, counts) of a validated answer in the format-independent form: errors {category (bare name),
    severity, location ("" when the format has none), description}; counts by bare category ({} when the
    format states none)."""
    fmt = fmt or OURS_FORMAT
    suffix = fmt.category_suffix
    errors = []
    for e in parsed.f_errors:  # type: ignore[attr-defined]
        category = e.f_category
        errors.append({"category": category[: len(category) - len(suffix)] if suffix else category,
                       "severity": e.f_severity, "location": getattr(e, "f_location", ""),
                       "description": e.f_description})
    if fmt.counts == "object":
        counts = {c: getattr(parsed.f_counts, f"c_{c}") for c in CATEGORIES[task]}  # type: ignore[attr-defined]
    elif fmt.counts == "fields":
        counts = {c: getattr(parsed, f"c_{c}") for c in CATEGORIES[task]}
    else:
        counts = {}
    return errors, counts


def worst_case_tokens(task: str, limits: JudgementLimits, fmt: AnswerFormat | None = None) -> int:
    """An upper bound on the tokens of any schema-valid compact answer for a byte-level tokenizer (every
    token covers ≥ 1 byte): the longest document, text counted at 3 bytes a character, plus the stop token."""
    fmt = fmt or OURS_FORMAT
    longest_cat = max(CATEGORIES[task], key=len)
    one = {"category": longest_cat, "severity": 3, "location": "", "description": ""}
    doc = answer_document(task, [one] * limits.max_errors, fmt, {c: limits.max_errors for c in CATEGORIES[task]})
    skeleton = len(json.dumps(doc, separators=(",", ":")).encode())
    chars = limits.max_description_chars + (limits.max_location_chars if fmt.has_location else 0)
    return skeleton + limits.max_errors * MAX_BYTES_PER_CHAR * chars + 1


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


def canonical_errors(task: str, errors: list[dict[str, Any]], limits: JudgementLimits,
                     fmt: AnswerFormat | None = None) -> list[dict[str, Any]]:
    """Labels as an answer in format `fmt` states them, in the format-independent form `read_answer` gives:
    texts fitted to the limits, at most `limits.max_errors` (the first ones are kept); a format without a
    location field carries it at the head of the description ("row 2: ..."), as the official table labels do.
    Raises ValueError for a category outside the task's set or a bad severity."""
    fmt = fmt or OURS_FORMAT
    cats = CATEGORIES[task]
    out = []
    for k, e in enumerate(errors[: limits.max_errors]):
        category = e.get("category")
        if category not in cats:
            raise ValueError(f"error {k}: category {category!r} is not one of the {task} categories {list(cats)}")
        severity = e.get("severity")
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise ValueError(f"error {k}: severity {severity!r} is not one of {list(SEVERITIES)}")
        location, description = e.get("location", "") or "", e.get("description", "") or ""
        if not fmt.has_location:
            location, description = "", f"{location}: {description}" if location.strip() else description
        out.append({"category": category, "severity": int(severity),
                    "location": fit_text(location, limits.max_location_chars),
                    "description": fit_text(description, limits.max_description_chars)})
    return out


def answer_document(task: str, errors: list[dict[str, Any]], fmt: AnswerFormat,
              counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The answer object in format `fmt` for format-independent errors (counts tallied unless given)."""
    if counts is None:
        counts = {c: sum(e["category"] == c for e in errors) for c in CATEGORIES[task]}
    items = []
    for e in errors:
        value = {"category": f"{e['category']}{fmt.category_suffix}", "severity": e["severity"],
                 "location": e.get("location", ""), "description": e.get("description", "")}
        items.append({fmt.error_key(f): value[f] for f in fmt.error_fields})
    if fmt.counts == "object":
        stated = {fmt.counts_key: dict(counts)}
    elif fmt.counts == "fields":
        stated = {fmt.count_name(c): n for c, n in counts.items()}
    else:
        stated = {}
    return {**stated, "errors": items} if fmt.counts_first else {"errors": items, **stated}


def serialize_answer(task: str, errors: list[dict[str, Any]], limits: JudgementLimits,
                     fmt: AnswerFormat | None = None) -> str:
    """The compact JSON text a critic answers in format `fmt` for these discrepancies (the schema's key
    order, separators (",", ":"), counts tallied from the list): byte for byte what the constrained decoder
    can produce."""
    fmt = fmt or OURS_FORMAT
    return json.dumps(answer_document(task, canonical_errors(task, errors, limits, fmt), fmt), separators=(",", ":"),
                      ensure_ascii=False)
