"""A critic's answer, parsed and checked: valid (schema and pydantic agree) or invalid with a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import jsonschema
from pydantic import ValidationError

from pipeline.critic.config import OURS_FORMAT, AnswerFormat, JudgementLimits
from pipeline.critic.schema import CATEGORIES, json_schema, judgement_model, read_answer


@dataclass
class Judgement:
    task: str
    valid: bool
    errors: list[dict[str, Any]] = field(default_factory=list)  # {category, severity, location, description}
    counts: dict[str, int] = field(default_factory=dict)
    raw: str = ""  # the model's text (last attempt)
    reason: str | None = None  # why it is invalid: not_json, schema, truncated, transport:..., bad_input:...
    attempts: int = 1
    counts_consistent: bool = True  # the stated counts equal the per-category tally of `errors`
    latency_s: float = 0.0

    @property
    def severity(self) -> int:
        """S = Σ severity over the listed errors."""
        return sum(int(e["severity"]) for e in self.errors)

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
                    finish_reason: str | None = None, fmt: AnswerFormat | None = None) -> Judgement:
    """Check an answer against the task's schema and pydantic model in answer format `fmt` (None = ours);
    never raises. The judgement's errors and counts are format-independent (bare category names)."""
    fmt = fmt or OURS_FORMAT
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
