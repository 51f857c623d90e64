"""Visual-ERM rewards from the critic's judgement (S = Σ severity of the listed discrepancies).

Paper form:          r = r_render + clip(1 − S / max S, 0, 1), max S over the samples of the same task in the
                     scored batch (max S = 0: every sample is perfect, S̃ = 0).
Official-code form:  charts/SVG r = r_render + clip(1 − S / 50, 0, 1) (fixed MAX_SEVERITY);
                     tables r = −S, and −4 on failure.
Here each form is the judgement part only; r_render is the separate `render_success` term, so the paper's
reward is `visual_erm_paper` + `render_success` (the default), the official one `visual_erm_official` +
`render_success` restricted to chart/svg. Failure rules (no code, render failure, blank image) give 0 — the
official tables −4 — before any judgement. A judgement still invalid after the configured attempts counts as
S = invalid_severity (official: 25), or fails the sample (`invalid_judgement: fail`) — for answers the critic
actually produced: a judgement that failed for want of an answer (engine error, endpoint down) is an
infrastructure failure, and the sample is excluded from the update instead of scored.
"""

from __future__ import annotations

from pipeline.critic.judgement import Judgement
from pipeline.rewards.base import INFRASTRUCTURE, NO_ANSWER_REASONS, Term, Unavailable
from pipeline.sample import Sample


def clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


class _VisualERM(Term):
    needs_judgement = True

    def measure(self, sample: Sample, judgement: Judgement | None):
        if judgement is None:
            return Unavailable("no_judgement")
        if judgement.valid:
            return {"severity": float(judgement.severity), "errors": float(len(judgement.errors)),
                    "invalid_judgement": 0.0, "attempts": float(judgement.attempts)}
        if (judgement.reason or "").startswith(NO_ANSWER_REASONS):
            return Unavailable(f"{INFRASTRUCTURE}critic:{judgement.reason}")
        f = self.cfg.formula
        if f.invalid_judgement == "fail":
            return Unavailable(f"invalid_judgement:{judgement.reason}")
        return {"severity": float(f.invalid_severity), "errors": 0.0, "invalid_judgement": 1.0,
                "attempts": float(judgement.attempts)}


class VisualERMPaper(_VisualERM):
    name = "visual_erm_paper"

    def values(self, task, measures):
        top = max((m["severity"] for m in measures), default=0.0)
        return [clip01(1.0 - (m["severity"] / top if top > 0 else 0.0)) for m in measures]


class VisualERMOfficial(_VisualERM):
    name = "visual_erm_official"

    def values(self, task, measures):
        if task == "table":
            return [-m["severity"] for m in measures]
        cap = self.cfg.formula.official_max_severity
        return [clip01(1.0 - m["severity"] / cap) for m in measures]

    def failure_value(self, task):
        return self.cfg.formula.table_failure_reward if task == "table" else 0.0


class RenderSuccess(Term):
    """r_render: 1 for a sample whose code rendered to a non-blank image (failures give 0)."""

    name = "render_success"

    def measure(self, sample, judgement):
        return {"value": 1.0}
