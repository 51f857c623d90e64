"""Policy evaluation over a synth-style dataset: extract code from each response, compare it with the
reference code (task text metrics: TEDS/TEDS-S for tables, ...), render it and compare pixels (SSIM, MSE);
charts are rendered with tracing and also get ChartMimic-style text/layout/type/colour F1 and their mean
(`trace_*_f1`, `trace_chart_low_level`) against the reference trace stored in the row.

Every item is counted: no code extracted and render failures score the worst value (SSIM 0, MSE 1,
text metrics and chart F1s 0) and are tallied by reason, so a policy cannot look better by failing more.
A rendered chart that came back without a trace also scores 0 (`trace_missing`). A chart row without a stored
reference trace has its reference code traced here (`reference_traced`); if even that gives none, the item
gets no chart scores and is counted (`no_reference_trace`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from pipeline.data.records import RecordFormatError, decode_image, read_rows
from pipeline.metrics.chart import chart_scores, failed_chart_scores, is_trace, reference_trace
from pipeline.metrics.image import image_metrics
from pipeline.tasks import get_task

# The chart task's code-level metrics already include `text_f1`: the trace scores are named trace_text_f1,
# trace_layout_f1, trace_type_f1, trace_color_f1 and trace_chart_low_level.
TRACE_PREFIX = "trace_"


def load_responses(path: str | Path) -> dict[int, str]:
    """JSONL of {"index": int, "response": str} (index = the dataset row's extra_info.index)."""
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[int(rec["index"])] = rec.get("response") or ""
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RecordFormatError(f"{path}:{n + 1}: need {{'index': int, 'response': str}} ({e})") from None
    return out


def _default_render(kind: str, code: str, trace: bool = False):
    from pipeline.render import render

    return render(kind, code, trace=trace and kind == "chart")


def evaluate_policy(data: str | Path, responses: Optional[dict[int, str]] = None,
                    render_fn: Optional[Callable] = None, progress: bool = True) -> dict:
    """responses=None scores the ground-truth code itself (an oracle run: checks the harness, ~perfect).

    render_fn(kind, code, trace=bool) -> RenderResult (with `.trace` for charts when trace=True)."""
    render_fn = render_fn or _default_render
    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, Counter] = defaultdict(Counter)
    items = []
    for pos, row in enumerate(tqdm(read_rows(data), desc="policy eval", disable=not progress, unit="item")):
        info = row.get("extra_info") or {}
        task_kind, index = info.get("task"), info.get("index", pos)
        c = counts[task_kind or "unknown"]
        c["items"] += 1
        try:
            task = get_task(task_kind)
            reference_code = row["reward_model"]["ground_truth"]
            reference = decode_image(row["images"][0], f"row {pos}")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            c["bad_record"] += 1
            items.append({"index": index, "error": f"bad record: {e}"})
            continue
        if responses is None:
            response = f"```\n{reference_code}\n```"
        elif index in responses:
            response = responses[index]
        else:
            c["no_response"] += 1
            response = ""
        extraction = task.extract_code(response)
        try:
            metrics = task.text_metrics(extraction.code, reference_code)
        except (SyntaxError, ValueError) as e:  # the dataset's own reference code does not parse
            c["bad_record"] += 1
            items.append({"index": index, "error": f"bad reference code: {e}"})
            continue
        c[f"extract_{extraction.status}"] += 1
        is_chart = task.kind == "chart"
        ref_trace = _reference_trace(info, reference_code, render_fn, c) if is_chart else None
        predicted_trace = None
        if extraction.ok:
            result = render_fn(task.renderer, extraction.code, trace=is_chart)
            if result.ok:
                c["rendered"] += 1
                metrics.update(image_metrics(result.image, reference))
                predicted_trace = getattr(result, "trace", None)
                if is_chart and not is_trace(predicted_trace):
                    c["trace_missing"] += 1
            else:
                c[f"render_{getattr(result.failure, 'value', result.failure)}"] += 1
                metrics.update({"ssim": 0.0, "mse": 1.0})
        else:
            metrics.update({"ssim": 0.0, "mse": 1.0})
        if ref_trace is not None:
            metrics.update(chart_scores(predicted_trace, ref_trace, TRACE_PREFIX) if is_trace(predicted_trace)
                           else failed_chart_scores(TRACE_PREFIX))
        for k, v in metrics.items():
            per_task[task.kind][k].append(v)
        items.append({"index": index, "task": task.kind, "extraction": extraction.status, **metrics})
    summary = {}
    for kind, m in per_task.items():
        summary[kind] = {"items": counts[kind]["items"], **{k: float(np.mean(v)) for k, v in sorted(m.items())}}
        summary[kind]["render_rate"] = counts[kind]["rendered"] / max(1, counts[kind]["items"])
    return {"summary": summary, "counts": {k: dict(v) for k, v in counts.items()}, "items": items}


def _reference_trace(info: dict, reference_code: str, render_fn: Callable, counts: Counter) -> Optional[dict]:
    """The row's stored reference trace; else trace the reference code now (counted); else None (counted)."""
    stored = reference_trace(info)
    if stored is not None:
        return stored
    result = render_fn("chart", reference_code, trace=True)
    traced = getattr(result, "trace", None) if result.ok else None
    if is_trace(traced):
        counts["reference_traced"] += 1
        return traced
    counts["no_reference_trace"] += 1
    return None


def format_policy_summary(summary: dict) -> str:
    keys = sorted({k for s in summary.values() for k in s if k != "items"})
    lines = ["| task | items | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for kind, s in sorted(summary.items()):
        cells = [f"{s[k]:.3f}" if k in s else "–" for k in keys]
        lines.append(f"| {kind} | {s['items']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
