"""ChartMimic-style low-level chart scores of a policy's chart: text, layout, chart-type and colour F1 between
the trace of its rendering and the reference chart's trace, plus their mean (`low_level`, the ChartMimic
low-level score); pipeline/metrics/policy.py reports them as eval/chart/<name>. The traces themselves are
made inside the render sandbox (`RenderRequest(trace=True)` → `RenderResult.trace`, see
pipeline/render/trace.py); the reference's is stored with each synthetic chart row (`extra_info.chart_trace`,
JSON) so evaluation never re-runs reference code for datasets that carry it.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from pipeline.render.trace import TRACE_KEYS, InvalidTrace, chart_trace_metrics, validate_trace

CHART_F1_KEYS = ("text_f1", "layout_f1", "type_f1", "color_f1")
CHART_SCORE_KEYS = (*CHART_F1_KEYS, "low_level")
TRACE_FIELD = "chart_trace"  # extra_info key of a synthetic chart row (a JSON string)


def chart_scores(predicted_trace: dict, reference_trace: dict) -> dict[str, float]:
    """The four F1s and their mean, keyed by CHART_SCORE_KEYS."""
    scores = chart_trace_metrics(predicted_trace, reference_trace)
    scores["low_level"] = sum(scores[k] for k in CHART_F1_KEYS) / len(CHART_F1_KEYS)
    return scores


def failed_chart_scores() -> dict[str, float]:
    """What a chart that produced no trace scores (no code, render failure, tracing failed): the worst."""
    return {k: 0.0 for k in CHART_SCORE_KEYS}


def is_trace(trace: Any) -> bool:
    return isinstance(trace, dict) and all(isinstance(trace.get(k), list) for k in TRACE_KEYS)


def encode_trace(trace: dict) -> str:
    return json.dumps(trace, ensure_ascii=False, separators=(",", ":"))


def reference_trace(extra_info: Optional[dict]) -> Optional[dict]:
    """The stored reference trace of a dataset row (`extra_info.chart_trace`), or None when the row has none
    or it is not a valid trace (then the caller traces the reference code itself and counts that)."""
    raw = (extra_info or {}).get(TRACE_FIELD)
    if not raw:
        return None
    try:
        # A dataset file is input like any other: a stored trace must have exactly the renderer's shape.
        return validate_trace(json.loads(raw) if isinstance(raw, (str, bytes)) else raw)
    except (json.JSONDecodeError, InvalidTrace):
        return None
