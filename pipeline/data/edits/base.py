"""The targeted-edit framework shared by the three task kinds.

An edit is a named transform of reference code (through a parsed tree: Python AST, HTML or SVG DOM — never
a text substitution) that returns the edited code and a ground-truth label: which of the paper's categories
the visible error falls in, its severity by a fixed rule, where it is and what is wrong. The label uses the
same fields as Visual-ERM's answer, so edited pairs are RM training data and a benchmark with known labels.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Callable

from pipeline.sample import CATEGORIES, Discrepancy


class EditNotApplicable(Exception):
    """The program has nothing this edit can change (e.g. no legend to remove)."""


@dataclass(frozen=True)
class EditLabel(Discrepancy):
    """The discrepancy a targeted edit made, known exactly, and which edit made it."""

    edit: str = ""  # the edit's name, for statistics

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Edit:
    name: str
    category: str
    severity_rule: str  # the rule, in words, for the taxonomy table
    apply: Callable[[str, random.Random], tuple[str, EditLabel]]
    # Removes or rewrites elements wholesale (a row, a series, a shape). Such an edit may only come first in
    # a pair: applied later it could erase an earlier edit and leave that edit's label describing nothing.
    destructive: bool = False


def pick(rng: random.Random, candidates: list, reason: str):
    """One of the places an edit could apply to, or EditNotApplicable(reason) when there is none."""
    if not candidates:
        raise EditNotApplicable(reason)
    return rng.choice(candidates)


def check_taxonomy(task: str, edits: list[Edit]) -> None:
    """Every edit's category must be one of the paper's categories for its task."""
    for e in edits:
        if e.category not in CATEGORIES[task]:
            raise ValueError(f"{task} edit {e.name!r} has category {e.category!r}, not in {CATEGORIES[task]}")


def typo(rng: random.Random, text: str) -> str:
    """A one-character slip: swap two neighbours, drop or double a letter (always differs from `text`)."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if not letters:
        raise EditNotApplicable(f"no letters to misspell in {text!r}")
    for _ in range(10):
        i = rng.choice(letters)
        op = rng.choice(["swap", "drop", "double"])
        if op == "swap" and i + 1 < len(text) and text[i + 1] != text[i]:
            out = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        elif op == "drop" and len(letters) > 1:
            out = text[:i] + text[i + 1:]
        else:
            out = text[:i] + text[i] + text[i:]
        if out != text:
            return out
    return text + text[-1]


def scale_severity(relative_change: float) -> int:
    """Severity of a value change by its relative size: ≤15 % minor, ≤50 % medium, larger severe."""
    r = abs(relative_change)
    return 1 if r <= 0.15 else 2 if r <= 0.5 else 3


def make_label(task: str, edit: str, category: str, severity: int, location: str, description: str) -> EditLabel:
    assert category in CATEGORIES[task] and severity in (1, 2, 3), (task, edit, category, severity)
    return EditLabel(category, severity, location, description, edit)


def visual_erm_answer(task: str, labels: list[EditLabel]) -> dict:
    """The JSON object Visual-ERM is trained to output for these discrepancies (counts + error list).
    Tables name the field `type`, charts and SVG `category`, as in the official prompts."""
    key = "type" if task == "table" else "category"
    answer: dict = {f"{c}_error_count": sum(lab.category == c for lab in labels) for c in CATEGORIES[task]}
    errors = []
    for lab in labels:
        err = {key: f"{lab.category}_error", "severity": lab.severity}
        if task != "table":
            err["location"] = lab.location
        err["description"] = lab.description if task != "table" else f"{lab.location}: {lab.description}"
        errors.append(err)
    answer["errors"] = errors
    return answer
