"""Visual-ERM rewards from the critic's judgement (S = Σ severity of the listed discrepancies).

Official-code form (the default; InternLM/Visual-ERM rl_scripts/reward_func/):
    charts/SVG  r = r_render + clip(1 − S / 50, 0, 1)  (omnirender_rm_v3.py: MAX_SEVERITY = 50,
                severity_to_reward; r_render = BASE_RENDER_SUCCESS_REWARD = 1); no code, a render failure or an
                all-white rendering → 0; an answer still unparseable after 2 calls → S = 25 (SEVERITY_AVG).
    tables      r = −S (table_parse_rm_v2.py: compute_score), one call; −4 on any failure (render, unparseable
                answer, no `errors`).
Batch-normalised form (`visual_erm_paper`, an option): r = r_render + clip(1 − S / max S, 0, 1), max S over
    the samples of the same task in the scored batch (max S = 0: every sample is perfect, S̃ = 0). This is our
    reading of the Visual-ERM paper's reward equation (docs: ARCHITECTURE.md "Visual-ERM facts"), not checked
    against the paper's text; note the worst sample of every batch then gets 0 whatever its S.
Here each form is the judgement part only; r_render is the separate `render_success` term, so the official
reward is `visual_erm_official` + `render_success` restricted to chart/svg (the default), the batch-normalised
one `visual_erm_paper` + `render_success`. Failure rules (no code, render failure, blank image) give each
term's failure value before any judgement. A judgement still invalid after the task's attempts counts as S =
invalid_severity or fails the sample (`reward.formula.invalid_judgement`; official: charts/SVG S = 25, tables
fail → −4) — for answers the critic actually produced: a judgement that failed for want of an answer (engine
error, endpoint down) is an infrastructure failure, and the sample is excluded from the update instead of
scored.
"""

from __future__ import annotations

from pipeline.critic.judgement import ORACLE_EXCLUSION, UNREADABLE_PROGRAM, Judgement
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
        reason = judgement.reason or ""
        if reason.startswith(UNREADABLE_PROGRAM):  # the oracle cannot read the policy's program: a failure
            return Unavailable(reason)
        if reason.startswith(ORACLE_EXCLUSION):  # the oracle had no reference to diff: excluded as "oracle:<why>"
            return Unavailable(f"{INFRASTRUCTURE}{reason}")
        if reason.startswith(NO_ANSWER_REASONS):
            return Unavailable(f"{INFRASTRUCTURE}critic:{reason}")
        f = self.cfg.formula
        if f.invalid_rule(sample.task) == "fail":
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
