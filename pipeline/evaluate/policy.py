"""Policy evaluation over a synth-style dataset (`python -m pipeline.evaluate policy`): extract the code from
each response, render it (charts with tracing) and score it with the driver's held-out metrics, under the
driver's names (pipeline/metrics/policy.py, one implementation for both): render_ok, ssim, mse, teds
(tables), and for charts the ChartMimic-style text_f1 / layout_f1 / type_f1 / color_f1 and their mean
low_level against the reference trace stored in the row. No critic judges here, so there is no reward.
Beside them, each task's code-level similarity of the extracted code to the reference code
(`Task.text_metrics`: TEDS / TEDS-S and edit similarity for tables, code_parses / edit_similarity / text_f1
/ number_f1 for charts, ...) is reported as code/<name>.

Report: `metrics` (flat eval/<task>/<name>, as the driver logs them, code-level ones as
eval/<task>/code/<name>), `summary` ({task: {"items", name: mean}}, the same numbers), `counts` (per task:
items, bad records, extraction statuses, renders and render failures by reason, chart tracing) and `items`
(each item's scores).

Every item is counted: no code extracted and render failures score the worst value (SSIM 0, MSE 1,
TEDS, code metrics and chart F1s 0) and are tallied by reason, so a policy cannot look better by failing
more. A rendered chart that came back without a trace also scores 0 (`trace_missing`). A chart row without a
stored reference trace has its reference code traced here (`reference_traced`); if even that gives none, the
item gets no chart scores and is counted (`no_reference_trace`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from pipeline.data.records import RecordFormatError, decode_image, read_rows
from pipeline.metrics.chart import is_trace, reference_trace
from pipeline.metrics.policy import RENDER_TRACE, answer_scores, policy_metrics
from pipeline.render import render
from pipeline.sample import Sample
from pipeline.tasks import get_task

# Prefix of a task's code-level metrics (`Task.text_metrics`), which the driver does not compute: they keep
# apart from the shared names (the chart's code-level text_f1 is not the trace's text_f1).
CODE_PREFIX = "code/"
# The chart counts that pipeline/metrics/policy.py defines (eval/chart/<name>), also shown under `counts`.
CHART_COUNTS = ("trace_missing", "no_reference_trace")


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


def evaluate_policy(data: str | Path, responses: Optional[dict[int, str]] = None,
                    render_fn: Optional[Callable] = None, progress: bool = True) -> dict:
    """responses=None scores the ground-truth code itself (an oracle run: checks the harness, ~perfect).

    render_fn(kind, code, trace=bool) -> RenderResult (with `.trace` for charts when trace=True); default:
    the sandboxed `pipeline.render.render`."""
    render_fn = render_fn or render
    counts: dict[str, Counter] = defaultdict(Counter)
    samples: list[Sample] = []
    ref_traces: list[Optional[dict]] = []
    scores: list[dict[str, float]] = []
    names: dict[str, dict[str, None]] = {}  # each task's score names, in order of first appearance
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
            code_metrics = task.text_metrics(extraction.code, reference_code)
        except (SyntaxError, ValueError) as e:  # the dataset's own reference code does not parse
            c["bad_record"] += 1
            items.append({"index": index, "error": f"bad reference code: {e}"})
            continue
        c[f"extract_{extraction.status}"] += 1
        sample = Sample(task=task.kind, reference_image=reference, prompt_id=str(index),
                        ground_truth_code=reference_code, response_text=response, code=extraction.code)
        is_chart = task.kind == "chart"
        ref_trace = _reference_trace(info, reference_code, render_fn, c) if is_chart else None
        if extraction.ok:
            result = render_fn(task.renderer, extraction.code, trace=is_chart)
            if result.ok:
                c["rendered"] += 1
                sample.rendered_image = result.image
                if is_chart:
                    sample.extra[RENDER_TRACE] = getattr(result, "trace", None)
            else:
                sample.render_error = getattr(result.failure, "value", result.failure)
                c[f"render_{sample.render_error}"] += 1
        answer = answer_scores(sample, ref_trace, rewards=False)
        answer.update({CODE_PREFIX + k: v for k, v in code_metrics.items()})
        samples.append(sample)
        ref_traces.append(ref_trace)
        scores.append(answer)
        names.setdefault(task.kind, {}).update(dict.fromkeys(answer))
        items.append({"index": index, "task": task.kind, "extraction": extraction.status, **answer})
    metrics = policy_metrics(samples, ref_traces, rewards=False, scores=scores)
    for name in CHART_COUNTS:
        if metrics.get(f"eval/chart/{name}"):
            counts["chart"][name] = metrics[f"eval/chart/{name}"]
    summary = {kind: {"items": counts[kind]["items"], **{n: metrics[f"eval/{kind}/{n}"] for n in task_names}}
               for kind, task_names in sorted(names.items())}
    return {"metrics": metrics, "summary": summary, "counts": {k: dict(v) for k, v in counts.items()},
            "items": items}


def _reference_trace(info: dict, reference_code: str, render_fn: Callable, counts: Counter) -> Optional[dict]:
    """The row's stored reference trace; else trace the reference code now (counted); else None."""
    stored = reference_trace(info)
    if stored is not None:
        return stored
    result = render_fn("chart", reference_code, trace=True)
    traced = getattr(result, "trace", None) if result.ok else None
    if is_trace(traced):
        counts["reference_traced"] += 1
        return traced
    return None


def format_policy_summary(summary: dict) -> str:
    """A markdown table, one row per task: the shared metrics, then the code-level ones."""
    keys = list(dict.fromkeys(k for _, s in sorted(summary.items()) for k in s if k != "items"))
    keys.sort(key=lambda k: k.startswith(CODE_PREFIX))
    lines = ["| task | items | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for kind, s in sorted(summary.items()):
        cells = [f"{s[k]:.3f}" if k in s else "–" for k in keys]
        lines.append(f"| {kind} | {s['items']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
