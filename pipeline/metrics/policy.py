"""How well a policy answered held-out items: the one scoring behind the driver's held-out evaluation
(`pipeline.loop.stages.evaluate_policy`, logged to wandb and metrics.jsonl), test-time revision
(`python -m pipeline.evaluate revise`) and `python -m pipeline.evaluate policy`.

Input: answers as `Sample`s that were extracted and rendered (`code`, `rendered_image` / `render_error`, for
charts the rendering's trace in `extra[RENDER_TRACE]`), optionally judged (`reward`), and each chart's
reference trace (None when it has none). Output, one flat dict with these names:

    eval/samples, eval/reward, eval/excluded, eval/excluded/<reason>, eval/render_failures/<failure>
    eval/<task>/reward        the critic's reward (judged answers only)
    eval/<task>/render_ok     render rate
    eval/<task>/ssim, mse     pixels against the reference image
    eval/<task>/teds          tables: TEDS of the code against the reference code; teds_s: TEDS-structure
    eval/svg/structure, element_f1, attribute_f1   SVGs with reference code: the markup's structure score
                              (pipeline/metrics/svg.py)
    eval/chart/text_f1, layout_f1, type_f1, color_f1, low_level
                              ChartMimic-style F1s between the traces of rendering and reference, and their mean
    eval/chart/trace_missing, eval/chart/no_reference_trace    counts (see `policy_metrics`)

Every answer counts: one without code or whose rendering failed scores the worst value (render_ok 0, SSIM 0,
MSE 1, TEDS 0, chart F1s 0), so a policy cannot look better by failing more.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.metrics.chart import chart_scores, failed_chart_scores, is_trace
from pipeline.metrics.image import image_metrics
from pipeline.metrics.svg import svg_structure
from pipeline.metrics.table import teds
from pipeline.sample import Sample

# Sample.extra key of the rendering's chart trace (pipeline/render/trace.py), set by whoever renders the
# answer with tracing on (the driver's render stage, the policy CLI).
RENDER_TRACE = "render_trace"


def answer_scores(sample: Sample, ref_trace: dict | None, rewards: bool = True) -> dict[str, float]:
    """One answer's scores, named as under eval/<task>/: reward (when `rewards`: the answers were judged),
    render_ok, ssim, mse; teds for a table with reference code; for a chart whose reference has a trace
    (`ref_trace`), the chart F1s and low_level (0 each when the answer has no trace of its own)."""
    out: dict[str, float] = {}
    if rewards:
        out["reward"] = float(sample.reward)
    out["render_ok"] = float(sample.rendered_image is not None)
    if sample.rendered_image is not None:
        pixels = image_metrics(sample.rendered_image, sample.reference_image)
        out["ssim"], out["mse"] = pixels["ssim"], pixels["mse"]
    else:  # nothing drawn: the worst score, so failures pull the average down instead of vanishing
        out["ssim"], out["mse"] = 0.0, 1.0
    if sample.task == "table" and sample.ground_truth_code:
        out["teds"] = teds(sample.code, sample.ground_truth_code)
        out["teds_s"] = teds(sample.code, sample.ground_truth_code, structure_only=True)
    if sample.task == "svg" and sample.ground_truth_code:
        out.update(svg_structure(sample.code, sample.ground_truth_code))
    if sample.task == "chart" and ref_trace is not None:
        own = sample.extra.get(RENDER_TRACE)
        # no code or a render failure (counted as such), or a rendering that came back untraced
        out.update(chart_scores(own, ref_trace) if is_trace(own) else failed_chart_scores())
    return out


def policy_metrics(samples: list[Sample], ref_traces: list[dict | None], rewards: bool = True,
                   scores: list[dict[str, float] | None] | None = None) -> dict[str, float]:
    """The eval/... metrics of answers (see the module doc): each task's mean of every `answer_scores` key,
    over the answers that have it. An excluded answer (an infrastructure failure says nothing about the
    policy) is counted under eval/excluded/<reason>, not averaged. A chart whose reference has no trace
    gets no chart scores, counted in eval/chart/no_reference_trace; a rendered chart without a trace of its
    own is counted in eval/chart/trace_missing.

    `rewards`: the answers were judged (report eval/reward and eval/<task>/reward). `scores`: each answer's
    `answer_scores` when the caller already has them (None for an excluded one), possibly with more keys
    of its own, which are averaged the same way."""
    if scores is None:
        scores = [None if s.excluded else answer_scores(s, ref, rewards)
                  for s, ref in zip(samples, ref_traces, strict=True)]
    per_task: dict[str, dict[str, list[float]]] = {}
    chart_counts: Counter = Counter()
    excluded: Counter = Counter()
    for s, ref_trace, answer in zip(samples, ref_traces, scores, strict=True):
        if s.excluded:
            excluded[s.excluded.split(":", 1)[0]] += 1
            continue
        task = per_task.setdefault(s.task, {})
        for name, value in answer.items():
            task.setdefault(name, []).append(value)
        if s.task == "chart":
            if ref_trace is None:
                chart_counts["no_reference_trace"] += 1
            elif s.rendered_image is not None and not is_trace(s.extra.get(RENDER_TRACE)):
                chart_counts["trace_missing"] += 1
    out: dict[str, float] = {"eval/samples": len(samples)}
    for task, metrics in sorted(per_task.items()):
        for name, values in metrics.items():
            out[f"eval/{task}/{name}"] = float(np.mean(values))
    if rewards:
        scored = [s.reward for s in samples if not s.excluded]
        out["eval/reward"] = float(np.mean(scored)) if scored else 0.0
    out["eval/excluded"] = sum(excluded.values())
    for reason, count in excluded.items():
        out[f"eval/excluded/{reason}"] = count
    for kind, count in Counter(s.render_error for s in samples if s.render_error).items():
        out[f"eval/render_failures/{kind}"] = count
    if any(s.task == "chart" for s in samples):
        out["eval/chart/trace_missing"] = chart_counts["trace_missing"]
        out["eval/chart/no_reference_trace"] = chart_counts["no_reference_trace"]
    return out

