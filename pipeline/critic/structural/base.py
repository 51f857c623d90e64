"""What the three structural differs share: the error record, the parse-failure rules, text helpers in the
edit engine's phrasing, and a sequence aligner.

The aligner pairs the parts of two programs (rows, columns, series, shapes) by similarity *and* order, so that
one inserted or deleted part costs one error and does not shift every later pair out of step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pipeline.sample import CATEGORIES

T = TypeVar("T")
U = TypeVar("U")

MAX_LOCATION_CHARS = 120
MAX_DESCRIPTION_CHARS = 400


class StructuralDiffError(ValueError):
    """The reference program cannot be parsed, so there is nothing to compare against; the message says why."""


class CandidateUnparseable(Exception):
    """Raised by a task's parser for the candidate side; the differ turns it into one severe error."""


@dataclass(frozen=True)
class Finding:
    """One discrepancy, in the critic's answer fields. `key` dedupes findings that describe the same thing."""

    category: str
    severity: int
    location: str
    description: str

    def to_dict(self) -> dict:
        return {"category": self.category, "severity": self.severity, "location": self.location,
                "description": self.description}


class Findings:
    """An ordered, de-duplicated list of findings for one task."""

    def __init__(self, task: str):
        self.task = task
        self.items: list[Finding] = []
        self._keys: set = set()

    def add(self, category: str, severity: int, location: str, description: str, key=None) -> None:
        assert category in CATEGORIES[self.task], (self.task, category)
        severity = min(3, max(1, int(severity)))
        key = key if key is not None else (category, location, description)
        if key in self._keys:
            return
        self._keys.add(key)
        self.items.append(Finding(category, severity, location, description))

    def dicts(self) -> list[dict]:
        return [f.to_dict() for f in self.items]


UNREADABLE = "its code could not be read"  # the wording that marks `unparseable_candidate`'s error


def is_unreadable(errors: list[dict]) -> bool:
    """Whether a diff's errors are the one error of the rule for a candidate that cannot be read."""
    return len(errors) == 1 and UNREADABLE in errors[0].get("description", "")


def unparseable_candidate(task: str, reason: str) -> list[dict]:
    """The rule for a candidate we cannot parse: one severe error of the task's structural category over the
    whole picture. Even if it rendered, nothing in it can be paired with the reference's parts."""
    category, where = {"chart": ("structure", "whole figure"), "table": ("layout", "whole table"),
                       "svg": ("structure", "whole image")}[task]
    return [Finding(category, 3, where, f"The {task} does not match the reference as a whole: {UNREADABLE} "
                                        f"({reason}).").to_dict()]


# ------------------------------------------------------------------------------------------------ text
def quote(text) -> str:
    """A value as the edit engine quotes it in labels: 'text'."""
    return f"'{text}'"


def is_typo(old: str, new: str) -> bool:
    """One slip of the kind `edits.base.typo` makes (swap two neighbours, drop or double a letter), or a change
    of letter case only: Damerau-Levenshtein distance 1 (restricted), or equal ignoring case. A word of one
    or two characters with one changed is another word."""
    if old == new:
        return False
    if old.lower() == new.lower():
        return True
    if min(len(old), len(new)) < 2 or max(len(old), len(new)) < 3:
        return False
    a, b = old, new
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if len(a) > len(b):
        a, b = b, a
    for i in range(len(b)):  # b is a with one character inserted
        if b[:i] + b[i + 1:] == a:
            return True
    return False


def num_text(value) -> str:
    """A number as Python writes it (the edit engine formats values with str/repr)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


# ---------------------------------------------------------------------------------------------- align
def align(ref: Sequence[T], cand: Sequence[U], sim: Callable[[T, U], float], threshold: float = 0.5,
          fill_gaps: bool = True) -> list[tuple[int | None, int | None]]:
    """Order-preserving pairing of two sequences (Needleman-Wunsch, gaps free, a pair scores its similarity
    when ≥ `threshold`). With `fill_gaps`, parts left over between the same two anchors are paired in order
    (a changed part, not one missing and one extra). Returns (ref index or None, cand index or None) pairs."""
    n, m = len(ref), len(cand)
    s = [[sim(ref[i], cand[j]) for j in range(m)] for i in range(n)]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            take = best[i + 1][j + 1] + s[i][j] if s[i][j] >= threshold else -1.0
            best[i][j] = max(take, best[i + 1][j], best[i][j + 1])
    anchors, i, j = [], 0, 0
    while i < n and j < m:
        if s[i][j] >= threshold and abs(best[i][j] - (best[i + 1][j + 1] + s[i][j])) < 1e-12:
            anchors.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    out: list[tuple[int | None, int | None]] = []
    pi, pj = 0, 0
    for ai, aj in anchors + [(n, m)]:
        gap_r, gap_c = list(range(pi, ai)), list(range(pj, aj))
        k = min(len(gap_r), len(gap_c)) if fill_gaps else 0
        out += [(gap_r[t], gap_c[t]) for t in range(k)]
        out += [(r, None) for r in gap_r[k:]] + [(None, c) for c in gap_c[k:]]
        if ai < n:
            out.append((ai, aj))
        pi, pj = ai + 1, aj + 1
    return out


def transposition(ref: Sequence[T], cand: Sequence[U], sim: Callable[[T, U], float],
                  threshold: float = 0.5) -> tuple[int, int] | None:
    """(a, b) when two equally long sequences agree better with parts a and b swapped than in place: both
    crossed pairs alike (≥ threshold), at least one in-place pair not, and the swap gaining ≥ 0.5 similarity.
    Other parts may differ too (they stay paired in place)."""
    n = len(ref)
    if len(cand) != n or n < 2:
        return None
    direct = [sim(ref[k], cand[k]) for k in range(n)]
    best, best_gain = None, 0.5
    for a in range(n):
        for b in range(a + 1, n):
            if direct[a] >= threshold and direct[b] >= threshold:
                continue
            ab, ba = sim(ref[a], cand[b]), sim(ref[b], cand[a])
            gain = ab + ba - direct[a] - direct[b]
            if ab >= threshold and ba >= threshold and gain >= best_gain:
                best, best_gain = (a, b), gain
    return best


def dice(a: Sequence, b: Sequence) -> float:
    """Dice overlap of two multisets; two empty ones are alike."""
    if not a and not b:
        return 1.0
    from collections import Counter

    ca, cb = Counter(a), Counter(b)
    return 2 * sum((ca & cb).values()) / (len(a) + len(b))
