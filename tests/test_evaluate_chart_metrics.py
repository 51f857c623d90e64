"""ChartMimic-style chart scores in policy evaluation: the reference trace stored by synth, the policy CLI's
chart F1s and their failure accounting, and the driver's held-out evaluation (eval/chart/*). First with a
stand-in renderer whose traces follow from the code, then with the real sandboxed renderer."""

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from pipeline.data.config import DataConfig
from pipeline.data.records import read_rows, write_parquet
from pipeline.data.synth import synthesize
from pipeline.metrics.chart import TRACE_FIELD, chart_scores, reference_trace
from pipeline.evaluate.policy import evaluate_policy
from pipeline.render.result import RenderFailure
from pipeline.sample import Sample
from pipeline.loop.stages import REFERENCE_TRACE, evaluate_policy as driver_eval

BAR = "import matplotlib.pyplot as plt\nplt.bar([1],[2])"


def _chart_tracing_available() -> tuple[bool, str]:
    from pipeline.render import render

    try:
        result = render("chart", BAR, trace=True)
    except TypeError as e:  # the renderer does not take trace= yet
        return False, f"chart tracing not available in the renderer yet ({e})"
    if result.trace is None:
        return False, "chart tracing not available in the renderer yet"
    return True, ""


@dataclass
class FakeResult:
    ok: bool
    image: Optional[np.ndarray] = None
    failure: Optional[str] = None
    detail: str = ""
    trace: Optional[dict] = None


def traced_render(task, code, config=None, trace=False):
    """Stand-in renderer: image and trace follow from the code; 'FAIL' fails, 'NOTRACE' renders untraced.
    Called by synth as (task, code, config): it traces as synth's own renderer does, per chart_traces."""
    trace = trace or (config is not None and config.chart_traces)
    if "FAIL" in code:
        return FakeResult(False, failure=RenderFailure.RUNTIME_ERROR)
    seed = sum(code.strip().encode()) % (2**32)
    image = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    words = sorted(set(code.split()))[:20]
    fake_trace = {"texts": words, "layout": [[1, 1, 0, 0]], "types": ["bar"], "colors": ["#1f77b4"]}
    return FakeResult(True, image, trace=fake_trace if trace and "NOTRACE" not in code else None)


def test_synth_stores_reference_trace_and_policy_scores_it(tmp_path):
    summary = synthesize("chart", 4, tmp_path, DataConfig(), render_fn=traced_render, progress=False)
    rows = list(read_rows(tmp_path))
    assert summary.rendered == 4 and summary.untraced == 0
    assert rows[0]["reward_model"]["ground_truth"]  # verl layout unchanged: code stays the ground truth
    traces = [reference_trace(r["extra_info"]) for r in rows]
    assert all(t is not None and t["types"] == ["bar"] for t in traces)
    assert json.loads(rows[0]["extra_info"][TRACE_FIELD]) == traces[0]

    oracle = evaluate_policy(tmp_path, None, render_fn=traced_render, progress=False)
    s = oracle["summary"]["chart"]
    assert s["text_f1"] == s["color_f1"] == s["low_level"] == 1.0
    assert "code/text_f1" in s  # the chart task's code-level text F1 keeps apart from the trace's

    idx = [r["extra_info"]["index"] for r in rows]
    ref0 = rows[0]["reward_model"]["ground_truth"]
    responses = {idx[0]: f"```python\n{ref0}\n```",  # perfect
                 idx[1]: "```python\nFAIL\n```",  # render failure → 0
                 idx[2]: "```python\nNOTRACE = 1\n```",  # rendered, no trace → 0, counted
                 idx[3]: f"```python\n{ref0}\n```"}  # another chart's code: partial text F1
    report = evaluate_policy(tmp_path, responses, render_fn=traced_render, progress=False)
    c, s = report["counts"]["chart"], report["summary"]["chart"]
    assert c["render_runtime_error"] == 1 and c["trace_missing"] == 1 and c["rendered"] == 3
    fourth = chart_scores(traced_render("chart", ref0, trace=True).trace, traces[3])
    assert s["text_f1"] == pytest.approx((1.0 + 0 + 0 + fourth["text_f1"]) / 4)
    assert s["type_f1"] == pytest.approx(0.5)  # two charts traced, both bars
    assert s["low_level"] == pytest.approx(
        np.mean([1.0, 0, 0, np.mean([fourth[k] for k in ("text_f1", "layout_f1", "type_f1", "color_f1")])]))


def test_rows_without_a_stored_trace_are_traced_once_and_counted(tmp_path):
    synthesize("chart", 3, tmp_path / "src", DataConfig(chart_traces=False), render_fn=traced_render,
               progress=False)
    rows = list(read_rows(tmp_path / "src"))
    assert all(r["extra_info"][TRACE_FIELD] == "" for r in rows)  # tracing off: column present, empty
    rows[0]["extra_info"][TRACE_FIELD] = '{"texts": "forged"}'  # not a trace: ignored, traced again
    rows[1]["reward_model"]["ground_truth"] = "FAIL"  # the reference itself cannot be traced
    write_parquet(rows, tmp_path / "data" / "chart.parquet")
    report = evaluate_policy(tmp_path / "data", None, render_fn=traced_render, progress=False)
    c = report["counts"]["chart"]
    assert c["reference_traced"] == 2 and c["no_reference_trace"] == 1
    scored = [i for i in report["items"] if "text_f1" in i]
    assert len(scored) == 2 and all(i["low_level"] == 1.0 for i in scored)


class FakePool:
    """The render pool's `map` over a render function (the driver's seam), recording requests."""

    def __init__(self, render_fn):
        self.render_fn, self.requests = render_fn, []

    def map(self, requests):
        self.requests.extend(requests)
        return [self.render_fn(r.kind, r.code, trace=r.trace) for r in requests]


class FakeRewardPool:
    class function:  # noqa: N801 - mirrors RewardScorer.function
        @staticmethod
        def finalize(samples, partials):
            for s in samples:
                s.reward = 1.0 if s.rendered_image is not None else 0.0

    def measure(self, samples):
        return [None] * len(samples)


def _chart_samples(codes, responses, stored=None):
    out = []
    for i, (code, response) in enumerate(zip(codes, responses)):
        s = Sample(task="chart", reference_image=np.zeros((24, 32, 3), np.uint8), prompt_id=f"p{i}",
                   ground_truth_code=code)
        s.response_text = response
        if stored and stored[i] is not None:
            s.extra[REFERENCE_TRACE] = stored[i]
        out.append(s)
    return out


def test_driver_eval_reports_chart_f1s_with_failures_counted():
    codes = ["import a\nplt.bar(x)", "import b\nplt.plot(y)", "import c\nplt.pie(z)"]
    ref0 = traced_render("chart", codes[0], trace=True).trace
    samples = _chart_samples(codes, [f"```python\n{codes[0]}\n```", "```python\nFAIL\n```",
                                     f"```python\n{codes[2]}\n```"], stored=[ref0, None, None])
    pool = FakePool(traced_render)
    out = driver_eval(samples, lambda prompts: prompts, pool, FakeRewardPool())
    # sample 0 perfect (stored reference), 1 render failure (0), 2 perfect (reference traced now)
    assert out["eval/chart/text_f1"] == pytest.approx(2 / 3)
    assert out["eval/chart/low_level"] == pytest.approx(2 / 3)
    assert out["eval/chart/reference_traced"] == 2 and out["eval/chart/no_reference_trace"] == 0
    assert out["eval/chart/trace_missing"] == 0 and out["eval/render_failures/runtime_error"] == 1
    assert all(r.trace for r in pool.requests if r.kind == "chart")


TRACING, WHY_NOT = _chart_tracing_available()


@pytest.mark.skipif(not TRACING, reason=WHY_NOT)
def test_real_renderer_oracle_is_perfect_and_an_edit_is_not(tmp_path):
    summary = synthesize("chart", 6, tmp_path, DataConfig(), progress=False)
    assert summary.rendered >= 5 and summary.untraced == 0
    oracle = evaluate_policy(tmp_path, None, progress=False)
    s = oracle["summary"]["chart"]
    assert s["low_level"] == 1.0 and oracle["counts"]["chart"].get("reference_traced", 0) == 0

    rows = list(read_rows(tmp_path))
    ref = rows[0]["reward_model"]["ground_truth"]
    edited = (ref + "\nplt.gcf().axes[0].set_title('A DIFFERENT TITLE')"
              "\nplt.gcf().axes[0].plot([0, 1], [0, 1], color='#ff00ff')")
    report = evaluate_policy(tmp_path, {rows[0]["extra_info"]["index"]: f"```python\n{edited}\n```"},
                             progress=False)
    item = next(i for i in report["items"] if i["index"] == rows[0]["extra_info"]["index"])
    assert item["text_f1"] < 1.0 and item["color_f1"] < 1.0 and item["type_f1"] < 1.0


@pytest.mark.skipif(not TRACING, reason=WHY_NOT)
def test_real_renderer_driver_eval(tmp_path):
    from pipeline.render import render

    synthesize("chart", 3, tmp_path, DataConfig(), progress=False)
    rows = list(read_rows(tmp_path))
    codes = [r["reward_model"]["ground_truth"] for r in rows]
    stored = [reference_trace(r["extra_info"]) for r in rows]
    samples = _chart_samples(codes, [f"```python\n{c}\n```" for c in codes], stored=stored)
    out = driver_eval(samples, lambda p: p, FakePool(lambda k, c, trace: render(k, c, trace=trace)),
                      FakeRewardPool())
    assert out["eval/chart/low_level"] == 1.0 and out["eval/chart/reference_traced"] == 0
    assert out["eval/chart/trace_missing"] == 0
