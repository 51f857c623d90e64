"""Structural diff of two matplotlib programs: structure, data, text and style discrepancies.

The public entry for charts (`diff`, as `table.py` and `svg.py` have theirs). The work is in three modules,
each importing only downwards:
  chart_interpreter — reads a program into its figure model without executing it (AST, bounded);
  chart_figure      — the figure model: panels, series, texts, styles, and the calls they came from;
  chart_diff        — compares two figure models and lists the discrepancies, worded as the edit engine's.
"""

from __future__ import annotations

from pipeline.critic.structural.base import CandidateUnparseable, StructuralDiffError, unparseable_candidate
from pipeline.critic.structural.chart_diff import TASK, diff_figures
from pipeline.critic.structural.chart_interpreter import build


def diff(reference_code: str, candidate_code: str) -> list[dict]:
    """The candidate program's discrepancies against the reference program. Raises StructuralDiffError for
    an unparseable reference; an unparseable candidate is one severe structure error."""
    try:
        ref = build(reference_code)
    except CandidateUnparseable as e:
        raise StructuralDiffError(f"the chart reference cannot be parsed: {e}") from None
    try:
        cand = build(candidate_code)
    except CandidateUnparseable as e:
        return unparseable_candidate(TASK, str(e))
    return diff_figures(ref, cand)


__all__ = ["TASK", "diff"]
