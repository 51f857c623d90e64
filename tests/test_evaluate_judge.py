"""The LLM-judge matcher of critic evaluation through the reward backends' text-only generation: an
OpenAI-compatible fake judge on 127.0.0.1 with scripted yes / partial / no verdicts (F1 against hand-computed
values, invalid answers counted as judge failures), and the tiny HF model, whose schema-constrained answer
always parses."""

import io
import json
import re
import threading

import pytest
from PIL import Image

from pipeline.critic.backends.vllm import vllm_available
from pipeline.critic.testing import ChatServer
from pipeline.evaluate.benchmark import evaluate_critic, text_judge
from pipeline.evaluate.config import CriticEvalConfig
from pipeline.metrics.critic import VERDICT_SCHEMA, LLMJudgeMatcher, parse_discrepancies, parse_verdict

LIFETIME_S = 60  # the fake judge shuts itself down after this long, whatever the test does

# (predicted description, annotated description) → the judge's answer; anything else → "no"
SCRIPT = {
    ("bar 2 is too high", "bar 2 value is too high"): '{"verdict":"yes"}',
    ("title has a typo", "title misspelled"): '{"verdict":"partial"}',
    ("garbled", "legend order reversed"): "I cannot tell.",  # never valid: a judge failure after retries
}


class FakeJudge(ChatServer):
    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        super().__init__(self._answer, lifetime_s=LIFETIME_S)

    def _answer(self, raw: bytes) -> tuple[int, str]:
        body = json.loads(raw)
        with self.lock:
            self.bodies.append(body)
        text = body["messages"][0]["content"]
        x, y = (json.loads(m)["description"] for m in re.findall(r"^[XY]: (\{.*\})$", text, re.M))
        return 200, SCRIPT.get((x, y), '{"verdict":"no"}')


@pytest.fixture
def fake_judge():
    judge = FakeJudge()
    yield judge
    judge.stop()


def e(cat, desc, sev=2, loc=""):
    return {"category": cat, "severity": sev, "location": loc, "description": desc}


def _png(color):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_openai_judge_f1_matches_hand_computed_values(tmp_path, fake_judge):
    (tmp_path / "a.png").write_bytes(_png("white"))
    records = [  # VC-RewardBench layout, the critic's answer embedded as pred_json
        {"id": "A", "category": "chart", "gt_img_path": "a.png", "pred_img_path": "a.png",
         "human_errors": [e("data", "bar 2 value is too high"), e("text", "title misspelled", 1)],
         "pred_json": {"errors": [e("data", "bar 2 is too high"), e("text", "title has a typo", 1)]}},
        {"id": "B", "category": "chart", "gt_img_path": "a.png", "pred_img_path": "a.png",
         "human_errors": [e("style", "wrong line colour")],
         "pred_json": {"errors": [e("style", "red line")]}},
        {"id": "C", "category": "chart", "gt_img_path": "a.png", "pred_img_path": "a.png",
         "human_errors": [e("data", "legend order reversed")],
         "pred_json": {"errors": [e("data", "garbled")]}},
    ]
    data = tmp_path / "bench.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = CriticEvalConfig.model_validate({
        "critic": {"kind": "records"},
        "matcher": {"kind": "llm_judge", "judge": {"max_attempts": 2, "reward": {
            "backend": "openai", "openai": {"endpoints": [{"base_url": fake_judge.url}], "model": "judge",
                                            "timeout_s": 5, "backoff_s": 0.01, "backoff_max_s": 0.05}}}}})
    report = evaluate_critic(data, cfg, progress=False)
    s = report["summary"]["chart"]
    # 4 predicted, 4 annotated; A: one yes (full) + one partial; B: no; C: judge failure → no.
    # hard: tp 1 → P = R = 1/4 → F1 0.25; soft: tp 1.5 → P = R = 3/8 → F1 0.375.
    assert (s["full_matches"], s["partial_matches"]) == (1, 1)
    assert s["f1_hard"] == pytest.approx(0.25) and s["f1_soft"] == pytest.approx(0.375)
    assert report["judge_failures"] == 1
    assert report["judge"] == {"judge_pairs": 4, "judge_failures": 1, "judge_retries": 1,
                               "verdicts": {"yes": 1, "partial": 1, "no": 2}}
    # Only same-category pairs are asked (4) plus one retry for C; text only, greedy, schema-constrained.
    assert len(fake_judge.bodies) == 5
    for body in fake_judge.bodies:
        assert isinstance(body["messages"][0]["content"], str) and body["temperature"] == 0.0
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["verdict"]["enum"] == ["yes", "partial", "no"]


def test_judge_config_needs_a_text_capable_backend():
    from pipeline.schema import ConfigError

    with pytest.raises(ValueError, match="judge.reward.backend"):
        CriticEvalConfig.model_validate({"matcher": {"kind": "llm_judge"}})
    cfg = CriticEvalConfig.model_validate({"matcher": {"kind": "llm_judge", "judge": {"reward": {
        "backend": "fingerprint"}}}})
    with pytest.raises(ConfigError, match="cannot generate text"):
        evaluate_critic("unused", cfg, progress=False)


def test_tiny_hf_judge_answers_always_parse(models_cfg):
    from pipeline.critic.backends import make_backend
    from pipeline.critic.testing import tiny_reward_config

    backend = make_backend(tiny_reward_config(), models_cfg.reward)
    try:
        judge = text_judge(backend, max_new_tokens=48, batch_size=16)
        words = ["bar", "line", "title", "legend", "axis", "tick", "colour", "marker", "label", "value", "grid",
                 "cell", "row", "column"]
        pred = parse_discrepancies([e("data", f"{w} {v} is off") for w, v in zip(words, range(6))], "chart")
        ann = parse_discrepancies([e("data", f"the {w} differs") for w in words[6:12]], "chart")
        raw = judge([LLMJudgeMatcher.prompt("chart", p, a) for p in pred for a in ann])
        assert len(raw) == 36 and all(parse_verdict(r) is not None for r in raw), raw
        matcher = LLMJudgeMatcher(judge, max_attempts=1)
        matches = matcher("chart", pred, ann)
        assert matcher.judge_failures == 0 and matcher.judge_pairs == 36
        assert len({m.predicted for m in matches}) == len(matches) == len({m.annotated for m in matches})
        assert backend.stats.text_errors == 0
    finally:
        backend.close()


def test_official_matcher_through_the_tiny_hf_judge(models_cfg):
    """The official matcher's judge through the critic backend seam: one constrained text chat per item; the
    tiny random model's answers always parse under the official cleaning (ids bounded by the schema)."""
    from pipeline.evaluate.benchmark import make_matcher
    from pipeline.evaluate.config import CriticEvalConfig
    from pipeline.metrics.critic import OfficialMatcher

    path = models_cfg.reward.path  # the session's random tiny critic, built by the fixture
    cfg = CriticEvalConfig.model_validate({"matcher": {"judge": {"model_path": path, "align_tokens_per_error": 40,
                                                                 "reward": {"backend": "hf", "hf": {"num_threads": 1}}}}})
    matcher = make_matcher(cfg)
    try:
        assert isinstance(matcher, OfficialMatcher) and matcher.stats()["judge"] == "llm:hf"
        for k in range(3):
            pred = parse_discrepancies([e("data", f"bar {k} is off"), e("text", "title typo", 1)], "chart")
            ann = parse_discrepancies([e("style", "red line"), e("data", f"bar {k} too high"),
                                       e("text", "legend")], "chart")
            alignment = matcher("chart", pred, ann)
            ids = [m.predicted for m in alignment.matches]
            assert len(set(ids)) == len(ids) and all(0 <= i < 2 for i in ids)
            assert set(alignment.unmatched_predicted) <= {0, 1} and set(alignment.unmatched_annotated) <= {0, 1, 2}
        assert matcher.judge_items == 3 and matcher.judge_failures == 0
    finally:
        matcher.align.backend.close()


HAVE_VLLM, WHY = vllm_available()


@pytest.mark.skipif(not HAVE_VLLM, reason=WHY or "vLLM not installed")
def test_vllm_judge_answers_parse(models_cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM is installed but no GPU is visible")
    from pipeline.critic.backends import make_backend
    from pipeline.critic.testing import tiny_reward_config

    cfg = tiny_reward_config(backend="vllm", vllm={"gpu_memory_utilization": 0.2, "max_model_len": 2048,
                                                   "enforce_eager": True})
    backend = make_backend(cfg, models_cfg.reward)
    try:
        pred = parse_discrepancies([e("data", "bar 2 is too high")], "chart")
        raw = text_judge(backend)([LLMJudgeMatcher.prompt("chart", pred[0], pred[0])] * 8)
        assert all(parse_verdict(r) is not None for r in raw), raw
    finally:
        backend.close()


@pytest.mark.parametrize("mode,key", [("structured_outputs", "structured_outputs"),
                                      ("guided_json", "guided_json"), ("none", None)])
def test_openai_text_request_uses_the_configured_structured_output(mode, key):
    from pipeline.critic.backends import TextRequest
    from pipeline.critic.backends.openai import OpenAIBackend
    from pipeline.critic.config import RewardConfig

    backend = OpenAIBackend(RewardConfig.model_validate({"backend": "openai", "openai": {
        "endpoints": [{"base_url": "http://127.0.0.1:9/v1"}], "structured_output": mode}}))
    try:
        body = backend.text_body(TextRequest([{"role": "user", "content": "X or Y?"}], VERDICT_SCHEMA, 20))
    finally:
        backend.close()
    assert body["messages"] == [{"role": "user", "content": "X or Y?"}] and body["max_tokens"] == 20
    constraint = {"structured_outputs": {"json": VERDICT_SCHEMA}, "guided_json": VERDICT_SCHEMA}
    assert {k: body[k] for k in constraint if k in body} == ({key: constraint[key]} if key else {})
    assert "response_format" not in body
