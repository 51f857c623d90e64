"""What the driver does to samples between actors: code extraction + rendering, reward measurement, and
evaluation of the policy on held-out prompts (generation, rendering and judging here; the scoring itself is
pipeline/metrics/policy.py, shared with `python -m pipeline.evaluate policy`). Pools are passed in
(duck-typed), so no Ray here."""

from __future__ import annotations

from typing import Callable

from pipeline.metrics.chart import is_trace
from pipeline.metrics.policy import RENDER_TRACE, policy_metrics
from pipeline.render.result import RenderRequest
from pipeline.revision import RevisionConfig, RevisionRun, revise
from pipeline.sample import REFERENCE_TRACE, Sample
from pipeline.tasks import get_task


def render_stage(samples: list[Sample], render_pool, trace_charts: bool = False) -> list[Sample]:
    """Extract each response's code and render it; a sample without code is passed on (the reward's failure
    rules score it), a render failure is recorded by type. `trace_charts`: charts also come back with their
    ChartMimic-style trace, kept in `extra[RENDER_TRACE]` (None when tracing gave none)."""
    todo = []
    for s in samples:
        extraction = get_task(s.task).extract_code(s.response_text)
        s.extra["extraction"] = extraction.status
        s.code = extraction.code
        if extraction.code is not None:
            todo.append(s)
    requests = [RenderRequest(s.task, s.code, trace=trace_charts and s.task == "chart") for s in todo]
    results = render_pool.map(requests) if todo else []
    for s, req, r in zip(todo, requests, results, strict=True):
        if r.ok:
            s.rendered_image = r.image
            if req.trace:
                s.extra[RENDER_TRACE] = r.trace
        else:
            s.render_error = r.failure.value
            s.extra["render_detail"] = r.detail[:300]
    return samples


def reference_traces(samples: list[Sample], render_pool) -> tuple[list[dict | None], int]:
    """Each chart sample's reference trace: the one its dataset row carried (`extra[REFERENCE_TRACE]`, from
    extra_info.chart_trace), else traced now from its ground truth code in the render pool (one render per
    distinct prompt; the count is returned)."""
    out: list[dict | None] = [None] * len(samples)
    todo: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.task != "chart":
            continue
        stored = s.extra.get(REFERENCE_TRACE)
        if is_trace(stored):
            out[i] = stored
        elif s.ground_truth_code:
            todo.setdefault(s.ground_truth_code, []).append(i)
    codes = list(todo)
    results = render_pool.map([RenderRequest("chart", code, trace=True) for code in codes]) if codes else []
    for code, r in zip(codes, results, strict=True):
        for i in todo[code]:
            out[i] = r.trace if r.ok and is_trace(r.trace) else None
    return out, len(codes)


def reward_stage(samples: list[Sample], reward_pool) -> list[Sample]:
    """Per-sample reward measurement (critic judgement, per-sample terms). Normalisation over the whole step
    batch (`finalize`) happens when the step's groups are complete."""
    for s, partial in zip(samples, reward_pool.measure(samples), strict=True):
        s.extra["reward_partial"] = partial
    return samples


def revision_stage(samples: list[Sample], generate: Callable[[list[Sample]], list[Sample]], render_pool,
                   reward_pool, rounds: int, max_listed: int = 8, feedback_mode: str = "critic") -> list[Sample]:
    """Training episodes (rollout.revision_rounds): after its reward is measured, each answer is revised
    `rounds` times with the critic's feedback; the revised answers ride along in `extra["revisions"]` (rendered
    and measured, finalised with the step; `pipeline.revision.revision_groups` makes their GRPO groups). Every
    answer is revised, a clean one too (its feedback says nothing was found), so each revised group is as
    large as the first answers' group."""
    run = revise(samples, generate, lambda batch: render_stage(batch, render_pool),
                 lambda batch: reward_stage(batch, reward_pool), rounds, stop_when_clean=False, max_listed=max_listed,
                 feedback_mode=feedback_mode)
    for item in run.items:
        item.attempts[0].extra["revisions"] = item.attempts[1:]
    return samples


def finalize_groups(reward_function, groups: list[list[Sample]]) -> dict:
    """Finalise the measured rewards of a step's groups together (batch-normalised formulas see them all)."""
    samples = [s for g in groups for s in g]
    return reward_function.finalize(samples, [s.extra.pop("reward_partial") for s in samples])


def evaluate_policy(prompts: list[Sample], generate: Callable[[list[Sample]], list[Sample]], render_pool,
                    reward_pool, revision_rounds: int = 0, revision: RevisionConfig | None = None) -> dict[str, float]:
    """Greedy responses on held-out prompts, judged by the critic and scored by
    `pipeline.metrics.policy.policy_metrics` (eval/..., plus eval/chart/reference_traced: reference codes
    traced now). With `revision_rounds`, each answer is then revised with the critic's feedback
    (pipeline/revision.py) and the answers kept after round k are scored again under
    eval/revision/round<k>/... (round 0 = the first answers), with the tokens and seconds each round spent."""
    def render(samples):
        return render_stage(samples, render_pool, trace_charts=True)

    def judge(samples):
        reward_pool.function.finalize(samples, reward_pool.measure(samples))

    samples = render(generate(prompts))
    judge(samples)
    ref_traces, traced_now = reference_traces(samples, render_pool)
    out = policy_metrics(samples, ref_traces)
    if any(s.task == "chart" for s in samples):
        out["eval/chart/reference_traced"] = traced_now
    if revision_rounds:
        revision = revision or RevisionConfig()
        run = revise(samples, generate, render, judge, revision_rounds, stop_when_clean=revision.stop_when_clean,
                     max_listed=revision.max_listed, feedback_mode=revision.feedback)
        out.update(revision_metrics(run, ref_traces, revision_rounds, revision.keep))
    return out


def revision_metrics(run: RevisionRun, ref_traces: list[dict | None], rounds: int, keep: str) -> dict[str, float]:
    """eval/revision/round<k>/<metric> for k = 0..rounds: the metrics of the answers kept after k rounds (an
    item that stopped early keeps its answer), plus revised / tokens / seconds of round k's own work."""
    out: dict[str, float] = {}
    for k in range(rounds + 1):
        prefix = f"eval/revision/round{k}/"
        for key, value in policy_metrics(run.kept(keep, k), ref_traces).items():
            out[prefix + key.removeprefix("eval/")] = value
        if 1 <= k <= len(run.costs):
            cost = run.costs[k - 1]
            out.update({prefix + "revised": cost.revised, prefix + "tokens": cost.tokens,
                        prefix + "seconds": cost.seconds})
        elif k:
            out.update({prefix + "revised": 0, prefix + "tokens": 0, prefix + "seconds": 0.0})
    out["eval/revision/stopped_clean"] = sum(item.stopped == "clean" for item in run.items)
    return out
