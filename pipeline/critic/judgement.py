"""A critic's answer, parsed and checked: valid (schema and pydantic agree) or invalid with a reason.

Two parsing rules (`reward.tasks.<task>.parsing`):
  strict    the answer must be a document of the task's JSON Schema in the configured answer format (what a
            constrained decoder always produces).
  official  as the official reward code reads the released checkpoint's answers (InternLM/Visual-ERM
            rl_scripts/reward_func/): an answer the schema rejects is read leniently instead, and the
            judgement is marked `lenient` (counted, so a drift off the trained format is visible).
            charts/SVG (omnirender_rm_v3.py: parse_error_response, extract_score_from_rm_response): a
              <think> block and a leading code fence are dropped; the text, else its first balanced {...},
              must be a JSON object; `errors` missing = no errors (S 0), not a list = unparseable; an item
              that is not an object or has no numeric severity is skipped; a negative severity counts 0.
            tables (table_parse_rm_v2.py: parse_error_response, calculate_error_score): a leading fence is
              dropped; the text, else its greedy {...}, must be a non-empty JSON object with `errors`; every
              item must be an object (a missing severity counts 0, a non-numeric one makes the answer
              unparseable); severities are summed as given, negative ones included.
The judgement is the same whatever the rule: errors {category, severity, location, description}, bare
category names where the item's category is one of the task's (an unknown one is kept as written).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import jsonschema
from pydantic import ValidationError

from pipeline.critic.config import OURS_FORMAT, AnswerFormat
from pipeline.critic.schema import json_schema, judgement_model, read_answer
from pipeline.sample import CATEGORIES, JudgementLimits


# Reasons of the oracle critic's failed judgements (pipeline/critic/backends/structural.py), read by the reward
# terms (pipeline/rewards): a pair it has nothing to diff against is excluded from the update; a policy program
# it cannot read fails the sample like a render failure.
ORACLE_EXCLUSION = "oracle:"
UNREADABLE_PROGRAM = "unreadable_program:"


@dataclass
class Judgement:
    task: str
    valid: bool
    errors: list[dict[str, Any]] = field(default_factory=list)  # {category, severity, location, description}
    counts: dict[str, int] = field(default_factory=dict)
    raw: str = ""  # the model's text (last attempt)
    # why it is invalid: not_json, schema, truncated, transport:..., bad_input:... (on a lenient one: why the
    # schema rejected it)
    reason: str | None = None
    attempts: int = 1
    counts_consistent: bool = True  # the stated counts equal the per-category tally of `errors`
    latency_s: float = 0.0
    # Read by the official rule's lenient parser (the schema rejected it): `reason` then says why the schema did.
    lenient: bool = False

    @property
    def severity(self) -> float:
        """S = Σ severity over the listed errors (integers 1-3 under the schema; any number when read leniently)."""
        return sum(e["severity"] for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity
        return d

    @classmethod
    def failed(cls, task: str, reason: str, raw: str = "", attempts: int = 1) -> Judgement:
        return cls(task=task, valid=False, raw=raw, reason=reason, attempts=attempts)


@lru_cache(maxsize=64)
def _validator(task: str, limits_json: str, fmt_json: str) -> jsonschema.Draft202012Validator:
    limits = JudgementLimits.model_validate_json(limits_json)
    return jsonschema.Draft202012Validator(json_schema(task, limits, AnswerFormat.model_validate_json(fmt_json)))


def _first_json_object(text: str) -> Any:
    """The JSON object in `text`: the whole text, else the span from the first '{' to the last '}' (for
    endpoints without constrained decoding that wrap the answer in prose or a code fence)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object")
    return json.loads(text[start : end + 1])


def parse_judgement(text: str | None, task: str, limits: JudgementLimits,
                    finish_reason: str | None = None, fmt: AnswerFormat | None = None,
                    rule: str = "strict") -> Judgement:
    """Check an answer against the task's schema and pydantic model in answer format `fmt` (None = ours);
    with `rule="official"`, an answer the schema rejects is read as the official reward code reads it (see the
    module docstring). Never raises. The judgement's errors and counts are format-independent (bare names)."""
    fmt = fmt or OURS_FORMAT
    strict = _parse_strict(text, task, limits, finish_reason, fmt)
    if strict.valid or rule == "strict":
        return strict
    if rule != "official":
        raise ValueError(f"unknown parsing rule {rule!r} (strict | official)")
    lenient = (_read_official_table if task == "table" else _read_official_chart)(text or "")
    if lenient is None:
        return strict
    errors = [_lenient_error(item, task, fmt, severity) for item, severity in lenient]
    tally = {c: 0 for c in CATEGORIES[task]}
    for e in errors:
        if e["category"] in tally:
            tally[e["category"]] += 1
    return Judgement(task=task, valid=True, errors=errors, counts=tally, raw=text or "", reason=strict.reason,
                     lenient=True)


def _parse_strict(text: str | None, task: str, limits: JudgementLimits, finish_reason: str | None,
                  fmt: AnswerFormat) -> Judgement:
    raw = text or ""
    if not raw.strip():
        reason = "truncated" if finish_reason == "length" else "empty"
        return Judgement.failed(task, reason, raw)
    try:
        obj = _first_json_object(raw)
    except (ValueError, RecursionError):
        reason = "truncated" if finish_reason == "length" else "not_json"
        return Judgement.failed(task, reason, raw)
    fmt_json = fmt.model_dump_json()
    problems = sorted(_validator(task, limits.model_dump_json(), fmt_json).iter_errors(obj),
                      key=lambda e: list(e.path))
    if problems:
        p = problems[0]
        where = "/".join(str(x) for x in p.absolute_path) or "<root>"
        return Judgement.failed(task, f"schema:{where}: {p.message[:160]}", raw)
    try:  # the pydantic model must agree with the schema (tests check both on many documents)
        parsed = judgement_model(task, limits, fmt).model_validate(obj)
    except ValidationError as e:
        return Judgement.failed(task, f"model:{e.errors()[0]['msg'][:160]}", raw)
    errors, counts = read_answer(task, parsed, fmt)
    tally = {c: 0 for c in CATEGORIES[task]}
    for e in errors:
        tally[e["category"]] += 1
    consistent = tally == counts if counts else True  # a format without counts cannot contradict itself
    return Judgement(task=task, valid=True, errors=errors, counts=counts or tally, raw=raw,
                     counts_consistent=consistent)


# ---------------------------------------------------------------------------------------------------------
# The official reward code's lenient reading (rule "official"): each returns [(item, severity)] to count, or
# None where that code finds the answer unparseable.
# ---------------------------------------------------------------------------------------------------------
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float))  # bool included: Python's sum() adds True as 1, as the official code does


def _first_balanced_object(text: str) -> str | None:
    """omnirender_rm_v3.py's extract_json_object: from the first '{' to the brace that closes it."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _read_official_chart(text: str) -> list[tuple[Any, float]] | None:
    raw = _THINK.sub("", text.strip()).strip()
    if raw.startswith("```"):
        raw = re.sub(r"^```[a-zA-Z0-9_+-]*\s*\n?", "", raw, count=1)
        raw = re.sub(r"\n?\s*```$", "", raw).strip()
    obj = _loads(raw)
    if not isinstance(obj, dict):
        obj = _loads(_first_balanced_object(raw))
    if not isinstance(obj, dict):
        return None
    errors = obj.get("errors", [])
    if not isinstance(errors, list):
        return None
    out = []
    for item in errors:
        if not isinstance(item, dict) or item.get("severity") is None:
            continue
        try:
            severity = float(item["severity"])  # "2" counts 2, as float() reads it there
        except (TypeError, ValueError):
            continue
        if math.isnan(severity):  # float("nan") parses there, and would poison S: skipped like a non-number
            continue
        out.append((item, max(0.0, severity)))
    return out


def _read_official_table(text: str) -> list[tuple[Any, float]] | None:
    raw = text.strip()
    if raw.startswith("```"):
        raw = re.sub(r"^```[a-zA-Z0-9_+-]*\s*", "", raw)
        raw = re.sub(r"\s*```$", "", raw).strip()
    obj = _loads(raw)
    if obj is None:
        m = re.search(r"\{.*\}", raw, re.DOTALL)
        obj = _loads(m.group(0)) if m else None
    if not obj or not isinstance(obj, dict) or "errors" not in obj:  # calculate_error_score → None → −4
        return None
    errors = obj["errors"]
    if isinstance(errors, dict):
        errors = list(errors)  # iterating a dict gives its keys: strings, which fail below
    if not isinstance(errors, (list, str)):
        return None
    out = []
    for item in errors:
        if not isinstance(item, dict):
            return None
        severity = item.get("severity", 0)
        if not _is_number(severity) or not math.isfinite(severity):  # NaN/inf: there, a NaN reward; here, −4
            return None
        out.append((item, float(severity)))
    return out


def _lenient_error(item: dict, task: str, fmt: AnswerFormat, severity: float) -> dict[str, Any]:
    category = item.get(fmt.category_key, item.get("category", item.get("type", "")))
    category = str(category) if category is not None else ""
    suffix = fmt.category_suffix or "_error"
    bare = category.removesuffix(suffix)
    return {"category": bare if bare in CATEGORIES[task] else category,
            "severity": int(severity) if severity.is_integer() else severity,
            "location": str(item.get("location", "") or ""), "description": str(item.get("description", "") or "")}
