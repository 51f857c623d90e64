"""The built-in *structural teacher*: discrepancy labels from diffing two programs' structure, no model.

It labels (a) the policy's own natural errors — the policy's code against the reference program — as critic
training data (`teacher = "structural"` in the critic SFT set), and (b) serves as a baseline critic in the
evaluation, where on targeted-edit pairs it diffs the reference code against the edited code.

Labels have exactly the critic's answer shape, `[{"category", "severity", "location", "description"}]`, with
the task's categories (`pipeline.critic.schema.CATEGORIES`), and the edit engine's wording and severity rules
(`pipeline.data.edits`) for the same kind of change, so that the evaluation's word-overlap matcher can pair a
teacher label with an edit label. One module per task kind, each with `diff(reference_code, candidate_code)`:
  chart — the matplotlib program's AST, interpreted without executing it (`chart.py`; the interpreter,
          the figure model and the differ are `chart_interpreter.py`, `chart_figure.py`, `chart_diff.py`);
  table — HTML or Markdown parsed into a span-aware cell grid (`table.py`);
  svg   — the XML element tree, DOCTYPE and entities refused (`svg.py`).

Parse rules. A reference that cannot be parsed raises `StructuralDiffError` (there is nothing to compare
against: a data bug the caller must see). A candidate that cannot be parsed yields exactly one severe error of
the task's structural category (chart/svg `structure`, table `layout`) over the whole picture: even if it
rendered, none of its parts can be paired with the reference's. Identical or visually equivalent programs
(reformatted, attributes reordered, variables renamed, figure size changed) yield [].
"""

from __future__ import annotations

from pipeline.critic.schema import fit_text
from pipeline.critic.structural import chart, svg, table
from pipeline.critic.structural.base import (
    MAX_DESCRIPTION_CHARS,
    MAX_LOCATION_CHARS,
    StructuralDiffError,
    is_unreadable,
)
from pipeline.sample import CATEGORIES

DIFFERS = {"chart": chart.diff, "table": table.diff, "svg": svg.diff}


def structural_diff(task: str, reference_code: str, candidate_code: str, *, max_errors: int = 24) -> list[dict]:
    """The discrepancies of `candidate_code` against `reference_code` (same task kind), most severe kept first
    when there are more than `max_errors`; texts fitted to the answer schema (no double quotes or backslashes,
    location ≤ 120 and description ≤ 400 characters). Raises StructuralDiffError for an unparseable reference,
    ValueError for an unknown task."""
    if task not in DIFFERS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(DIFFERS)}")
    if not isinstance(reference_code, str) or not reference_code.strip():
        raise StructuralDiffError(f"the {task} reference program is empty")
    errors = DIFFERS[task](reference_code, candidate_code if isinstance(candidate_code, str) else "")
    out = []
    for e in errors:
        assert e["category"] in CATEGORIES[task], (task, e)
        out.append({"category": e["category"], "severity": int(e["severity"]),
                    "location": fit_text(e["location"], MAX_LOCATION_CHARS),
                    "description": fit_text(e["description"], MAX_DESCRIPTION_CHARS)})
    if len(out) > max_errors:
        # keep the most severe, in their original order
        keep = sorted(range(len(out)), key=lambda k: (-out[k]["severity"], k))[:max(0, max_errors)]
        out = [out[k] for k in sorted(keep)]
    return out


class StructuralTeacher:
    """A teacher/critic with the `label(task, reference_code, candidate_code)` interface."""

    name = "structural"

    def __init__(self, max_errors: int = 24):
        self.max_errors = max_errors

    def label(self, task: str, reference_code: str, candidate_code: str) -> list[dict]:
        return structural_diff(task, reference_code, candidate_code, max_errors=self.max_errors)


__all__ = ["DIFFERS", "StructuralDiffError", "StructuralTeacher", "is_unreadable", "structural_diff"]
