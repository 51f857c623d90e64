"""Reward formulas against hand-computed values: the official code form (the default: fixed max severity 50;
tables −S / −4), the batch-normalised "paper" form (an option), render term, failure rules, invalid
judgements, weights, and the baselines (SSIM, pixel MSE, TEDS, code edit distance, embedding similarity)."""

import json

import numpy as np
import pytest

from pipeline.critic.backends.base import RawAnswer, RewardBackend
from pipeline.critic.config import RewardConfig
from pipeline.critic.judgement import Judgement, parse_judgement
from pipeline.critic.scorer import RewardScorer
from pipeline.rewards import RewardFunction, precheck
from pipeline.rewards.baselines import normalized_edit_similarity
from pipeline.sample import CATEGORIES, Sample

WHITE = np.full((32, 32, 3), 255, np.uint8)


def _image(seed):
    img = WHITE.copy()
    rng = np.random.default_rng(seed)
    img[8:24, 4 + seed % 8 : 20 + seed % 8] = rng.integers(0, 200, 3)
    return img


def _sample(task, i, **kw):
    fields = dict(task=task, reference_image=_image(i), prompt_id="g", code="plot()", rendered_image=_image(i + 1))
    fields.update(kw)
    return Sample(**fields)


def _judgement(task, severities):
    cats = CATEGORIES[task]
    errors = [{"category": cats[k % len(cats)], "severity": s, "location": "here", "description": "differs"}
              for k, s in enumerate(severities)]
    counts = {c: sum(e["category"] == c for e in errors) for c in cats}
    j = parse_judgement(json.dumps({"errors": errors, "counts": counts}), task, RewardConfig().limits)
    assert j.valid
    return j


INVALID = Judgement.failed("chart", "not_json", raw="no idea", attempts=3)
# The batch-normalised form with the rules these tests were written for (before the official defaults).
PAPER = {"formula": {"terms": [{"name": "visual_erm_paper"}, {"name": "render_success"}],
                     "invalid_judgement": "fixed_severity", "blank_rule": "tolerance"}}


def _run(cfg, samples, judgements):
    fn = RewardFunction(cfg)
    f = cfg.formula
    failures = [precheck(s, f.blank_tolerance, f.blank_rule) for s in samples]
    ok = [i for i, fail in enumerate(failures) if fail is None]
    partials = fn.measure([samples[i] for i in ok], [judgements[i] for i in ok])
    from pipeline.rewards import Partial

    all_partials = [Partial(uid=s.uid, failure=fail) for s, fail in zip(samples, failures)]
    for i, p in zip(ok, partials):
        all_partials[i] = p
    stats = fn.finalize(samples, all_partials)
    return [s.reward for s in samples], stats


def _batch():
    """Charts with S = 0, 3, 6 and an invalid judgement; one table with S = 2; one SVG with S = 0; and one
    failure of each kind (no code, render failure, blank rendering) for chart and table."""
    samples = [_sample("chart", 0), _sample("chart", 1), _sample("chart", 2), _sample("chart", 3),
               _sample("table", 4), _sample("svg", 5),
               _sample("chart", 6, code=None), _sample("chart", 7, code="   "),
               _sample("chart", 8, rendered_image=None, render_error="timeout"),
               _sample("chart", 9, rendered_image=WHITE.copy()),
               _sample("table", 10, rendered_image=np.full((32, 32, 3), 128, np.uint8)),
               _sample("table", 11, code="")]
    judgements = [_judgement("chart", []), _judgement("chart", [1, 2]), _judgement("chart", [3, 3]), INVALID,
                  _judgement("table", [2]), _judgement("svg", []), None, None, None, None, None, None]
    return samples, judgements


def test_paper_form_normalises_by_the_task_batch_max_and_applies_failure_rules():
    cfg = RewardConfig.model_validate(PAPER)  # visual_erm_paper + render_success, invalid → S = 25
    samples, judgements = _batch()
    rewards, stats = _run(cfg, samples, judgements)
    # charts: S = 0, 3, 6, 25 → max 25 → 1 + (1 − S/25)
    expected = [2.0, 1 + (1 - 3 / 25), 1 + (1 - 6 / 25), 1.0,
                1.0,  # the only table: S = 2 = its batch max → 1 + 0
                2.0,  # the only SVG: max S = 0 → S̃ = 0
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert rewards == pytest.approx(expected)
    assert [s.failure for s in samples[6:]] == [
        "reward:no_code", "reward:no_code", "reward:render_failure:timeout", "reward:blank_image",
        "reward:blank_image", "reward:no_code"]
    assert all(s.failure is None for s in samples[:6])
    assert stats["failures"] == {"no_code": 3, "render_failure": 1, "blank_image": 2}
    assert stats["invalid_judgements"] == 1 and stats["judged"] == 6 and stats["samples"] == 12
    b = samples[1].reward_breakdown
    assert b["visual_erm_paper/severity"] == 3 and b["visual_erm_paper"] == pytest.approx(0.88)
    assert b["render_success"] == 1.0 and b["total"] == pytest.approx(1.88)
    assert samples[3].reward_breakdown["visual_erm_paper/invalid_judgement"] == 1.0
    assert [d["severity"] for d in samples[2].discrepancies] == [3, 3]
    assert samples[3].discrepancies == [] and samples[8].discrepancies == []
    assert samples[9].reward_breakdown == {"failure/blank_image": 1.0, "visual_erm_paper": 0.0,
                                           "render_success": 0.0, "total": 0.0}


def test_paper_form_normalises_each_task_separately_and_all_perfect_batch():
    cfg = RewardConfig.model_validate(PAPER)
    samples = [_sample("chart", 0), _sample("chart", 1), _sample("svg", 2), _sample("svg", 3)]
    judgements = [_judgement("chart", [3]), _judgement("chart", [1]), _judgement("svg", []),
                  _judgement("svg", [])]
    rewards, _ = _run(cfg, samples, judgements)
    assert rewards == pytest.approx([1.0, 1 + (1 - 1 / 3), 2.0, 2.0])


def test_official_form_is_the_default_fixed_max_severity_and_table_rules():
    cfg = RewardConfig()
    assert [(t.name, t.tasks) for t in cfg.formula.terms] == [("visual_erm_official", None),
                                                              ("render_success", ["chart", "svg"])]
    samples, judgements = _batch()
    rewards, _ = _run(cfg, samples, judgements)
    expected = [2.0, 1 + (1 - 3 / 50), 1 + (1 - 6 / 50), 1 + (1 - 25 / 50),  # invalid chart: S = 25
                -2.0,  # table: −S, no render term
                2.0,
                0.0, 0.0, 0.0, 0.0,  # chart failures → 0 (the white rendering is blank)
                -4.0, -4.0]  # table: grey page (judged officially, here without a judgement), no code → −4
    assert rewards == pytest.approx(expected)
    assert samples[10].failure == "reward:visual_erm_official:no_judgement"  # not blank under the official rule
    # S ≥ 50 is clipped at 0 (plus the render term).
    big = [_sample("chart", 0)]
    rewards, _ = _run(cfg, big, [_judgement("chart", [3] * 20)])
    assert rewards == pytest.approx([1.0])


def test_invalid_judgement_rule_fail_gives_the_failure_reward_with_its_reason():
    cfg = RewardConfig.model_validate({"formula": {**PAPER["formula"], "invalid_judgement": "fail"}})
    samples, judgements = _batch()
    rewards, stats = _run(cfg, samples, judgements)
    # The invalid chart now fails (0) and leaves the batch: charts S = 0, 3, 6 → max 6.
    assert rewards[:4] == pytest.approx([2.0, 1 + (1 - 3 / 6), 1.0, 0.0])
    assert samples[3].failure == "reward:invalid_judgement:not_json"
    assert stats["invalid_judgements"] == 1 and stats["failures"]["invalid_judgement"] == 1


def test_weights_compose_terms_and_baselines():
    cfg = RewardConfig.model_validate({"formula": {"terms": [
        {"name": "visual_erm_official", "weight": 0.5}, {"name": "ssim", "weight": 2.0},
        {"name": "pixel_mse", "weight": 1.0}, {"name": "code_edit_distance", "weight": 1.0}]}})
    same = _sample("chart", 0, ground_truth_code="plot(1)", code="plot(2)")
    same.rendered_image = same.reference_image.copy()
    rewards, _ = _run(cfg, [same], [_judgement("chart", [2, 3])])
    # 0.5·(1 − 5/50) + 2·SSIM(identical)=2 + 1·(1 − MSE 0)=1 + 1·(1 − 1/7)
    assert rewards == pytest.approx([0.5 * 0.9 + 2.0 + 1.0 + (1 - 1 / 7)])
    b = same.reward_breakdown
    assert b["ssim"] == pytest.approx(1.0) and b["pixel_mse/mse"] == 0.0 and b["visual_erm_official"] == 0.9


def test_pixel_baselines_and_missing_ground_truth_are_explicit():
    cfg = RewardConfig.model_validate({"formula": {"terms": [{"name": "pixel_mse"}, {"name": "teds"},
                                                             {"name": "code_edit_distance"}]}})
    pred = np.zeros((32, 32, 3), np.uint8)
    pred[31, :] = 255  # black with a white bottom row
    ref = WHITE.copy()
    ref[0:2, 0:2] = 0  # white with a black corner
    s = _sample("chart", 0, reference_image=ref, rendered_image=pred)
    _, stats = _run(cfg, [s], [None])
    # Pixels that differ (black vs white, squared error 1): 1024 − 32 (row) − 4 (corner) = 988.
    # No ground truth → the edit-distance term gives 0 and the sample records why.
    assert s.reward_breakdown["pixel_mse/mse"] == pytest.approx(988 / 1024)
    assert s.reward_breakdown["pixel_mse"] == pytest.approx(1 - 988 / 1024)
    assert "teds" not in s.reward_breakdown  # tables only
    assert s.failure == "reward:code_edit_distance:no_ground_truth"
    assert s.reward_breakdown["code_edit_distance/unavailable"] == 1.0
    assert stats["failures"] == {"code_edit_distance:no_ground_truth": 1}


def test_teds_on_tables():
    pytest.importorskip("pipeline.metrics.table", reason="pipeline.evaluate not importable yet")
    cfg = RewardConfig.model_validate({"formula": {"terms": [{"name": "teds"}]}})
    gt = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    same = _sample("table", 0, code=gt, ground_truth_code=gt)
    html = _sample("table", 1, code="<table><tr><td>a</td><td>b</td></tr><tr><td>1</td><td>2</td></tr></table>",
                   ground_truth_code=gt)
    wrong = _sample("table", 2, code="| a |\n|---|\n| 1 |\n", ground_truth_code=gt)
    nogt = _sample("table", 3, code=gt)
    rewards, _ = _run(cfg, [same, html, wrong, nogt], [None] * 4)
    assert rewards[0] == pytest.approx(1.0) and rewards[1] == pytest.approx(1.0)  # markdown ≡ html
    assert 0.0 < rewards[2] < 1.0 and rewards[3] == 0.0
    assert nogt.failure == "reward:teds:no_ground_truth"


def test_edit_similarity_by_hand():
    assert normalized_edit_similarity("abcd", "abce") == pytest.approx(0.75)
    assert normalized_edit_similarity("", "") == 1.0
    assert normalized_edit_similarity("abc", "") == 0.0
    assert normalized_edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_failure_rule_edge_cases():
    nearly_white = WHITE.copy()
    nearly_white[5, 5] = (252, 253, 251)  # within the tolerance of 2 → blank under "tolerance"
    assert precheck(_sample("chart", 0, rendered_image=nearly_white), 2, "tolerance") == "blank_image"
    # Official rule: every grayscale pixel 255 (PIL "L": (252, 253, 251) → 253 is not white, (255, 255, 254)
    # rounds to 255 and is).
    assert precheck(_sample("chart", 0, rendered_image=nearly_white)) is None
    whiteish = WHITE.copy()
    whiteish[5, 5] = (255, 255, 254)
    assert precheck(_sample("svg", 0, rendered_image=whiteish)) == "blank_image"
    assert precheck(_sample("table", 0, rendered_image=WHITE.copy())) is None  # tables: no blank check
    black = np.zeros((4, 4, 3), np.uint8)
    assert precheck(_sample("chart", 0, rendered_image=black)) is None  # one colour, but not white
    dot = WHITE.copy()
    dot[5, 5] = (0, 0, 0)  # one dark pixel is content
    assert precheck(_sample("chart", 0, rendered_image=dot), 2, "tolerance") is None
    assert precheck(_sample("chart", 0, rendered_image=b"\x89PNG garbage")).startswith("bad_input:")
    assert precheck(_sample("chart", 0, rendered_image=np.zeros((4, 4), np.float32)), 2,
                    "tolerance") == "blank_image"
    assert precheck(_sample("chart", 0, rendered_image=None)) == "render_failure:no_image"


class ScriptedBackend(RewardBackend):
    """Answers from a script, in call order: lets tests drive retries and invalid outputs."""

    name = "scripted"

    def __init__(self, cfg, script):
        super().__init__(cfg)
        self.script = list(script)
        self.calls = []

    def _generate(self, task, pairs, attempt):
        self.calls.append((task, len(pairs), attempt))
        out = []
        for _ in pairs:
            item = self.script.pop(0)
            out.append(item if isinstance(item, RawAnswer) else RawAnswer(item, "stop"))
        return out


def test_invalid_answers_are_retried_then_counted():
    cfg = RewardConfig.model_validate({**PAPER, "max_attempts": 3})
    good = json.dumps({"errors": [], "counts": {c: 0 for c in CATEGORIES["chart"]}})
    backend = ScriptedBackend(cfg, [good, "not json", "{\"errors\": 5}",  # attempt 1: ok, bad, bad
                                    "still not json", good,  # attempt 2: pair 2 bad again, pair 3 ok
                                    "```nope```"])  # attempt 3: pair 2 still bad → invalid after 3
    scorer = RewardScorer(cfg, backend=backend)
    samples = [_sample("chart", i) for i in range(3)]
    stats = scorer.score(samples)
    assert backend.calls == [("chart", 3, 1), ("chart", 2, 2), ("chart", 1, 3)]
    assert [s.extra["judgement"]["attempts"] for s in samples] == [1, 3, 2]
    assert [s.extra["judgement"]["valid"] for s in samples] == [True, False, True]
    assert samples[1].extra["judgement"]["reason"] == "not_json"
    assert stats["invalid_judgements"] == 1
    assert backend.stats.invalid_answers == 4 and backend.stats.invalid_judgements == 1
    # S = 0, 25 (invalid), 0 → paper form over the batch: 2, 1, 2
    assert [s.reward for s in samples] == pytest.approx([2.0, 1.0, 2.0])


def test_backend_exceptions_and_bad_inputs_become_failed_judgements():
    cfg = RewardConfig.model_validate({"max_attempts": 2})

    class Exploding(ScriptedBackend):
        def _generate(self, task, pairs, attempt):
            raise RuntimeError("CUDA out of memory")

    backend = Exploding(cfg, [])
    from pipeline.critic.backends import JudgeRequest

    out = backend.score([JudgeRequest("chart", _image(0), _image(1)), JudgeRequest("chart", _image(0), b"junk"),
                         JudgeRequest("pie", _image(0), _image(1))])
    assert [j.valid for j in out] == [False, False, False]
    assert out[0].reason.startswith("backend:RuntimeError: CUDA out of memory") and out[0].attempts == 2
    assert out[1].reason.startswith("bad_input:rendered image: cannot decode")
    assert out[2].reason.startswith("bad_input:unknown task")


def test_embedding_reward_with_a_tiny_random_encoder(tmp_path):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(tmp_path / "enc")
    cfg = RewardConfig.model_validate({"formula": {"terms": [{"name": "embedding"}]},
                                       "embedding": {"path": str(tmp_path / "enc")}})
    a = _sample("svg", 0)
    a.rendered_image = a.reference_image.copy()
    b = _sample("svg", 3)
    b.rendered_image = np.ascontiguousarray(255 - b.reference_image)
    rewards, _ = _run(cfg, [a, b], [None, None])
    assert rewards[0] == pytest.approx(1.0, abs=1e-5)  # identical images: cosine 1
    assert -1.0 <= rewards[1] < 0.999
    assert a.reward_breakdown["embedding"] == pytest.approx(rewards[0])
    with pytest.raises(ValueError, match="embedding.path"):
        RewardConfig.model_validate({"formula": {"terms": [{"name": "embedding"}]}})
    broken = RewardConfig.model_validate({"formula": {"terms": [{"name": "embedding"}]},
                                          "embedding": {"path": str(tmp_path / "missing")}})
    c = _sample("svg", 0)
    rewards, _ = _run(broken, [c], [None])
    assert rewards == [0.0] and c.failure.startswith("reward:embedding:error:FileNotFoundError")


def test_engine_errors_exclude_the_sample_instead_of_scoring_it():
    """An answer the critic never produced (engine error) is an infrastructure failure: excluded, no reward,
    no part in the batch maximum; an invalid answer it did produce still costs S = invalid_severity."""
    cfg = RewardConfig.model_validate({**PAPER, "max_attempts": 1})
    good = json.dumps({"errors": [{"category": "data", "severity": 3, "location": "bar 1", "description": "short"}],
                       "counts": {"structure": 0, "data": 1, "text": 0, "style": 0}})
    clean = json.dumps({"errors": [], "counts": {c: 0 for c in CATEGORIES["chart"]}})
    engine_error = RawAnswer(error="backend:RuntimeError: CUDA out of memory")
    backend = ScriptedBackend(cfg, [good, engine_error, clean, "not json"])
    samples = [_sample("chart", i) for i in range(4)]
    stats = RewardScorer(cfg, backend=backend).score(samples)
    assert samples[1].excluded.startswith("critic:backend:RuntimeError") and samples[1].reward is None
    assert samples[1].failure is None and samples[1].reward_breakdown == {"excluded": 1.0}
    assert stats["excluded"] == 1 and stats["exclusions"] == {"critic": 1} and stats["invalid_judgements"] == 1
    # paper form over the scored samples only: S = 3, 0, 25 (invalid answer) → max S 25
    assert [samples[i].reward for i in (0, 2, 3)] == pytest.approx([1.0 + 1 - 3 / 25, 2.0, 1.0])


def test_a_crashed_renderer_is_excluded_but_the_policys_render_errors_are_scored():
    cfg = RewardConfig()
    crashed = _sample("svg", 0, rendered_image=None, render_error="crashed")
    syntax = _sample("svg", 1, rendered_image=None, render_error="syntax_error")
    rewards, stats = _run(cfg, [crashed, syntax], [None, None])
    assert crashed.excluded == "render_crashed" and rewards[0] is None
    assert syntax.excluded is None and rewards[1] == 0.0 and syntax.failure == "reward:render_failure:syntax_error"
    assert stats["excluded"] == 1 and stats["failed"] == 1


def test_official_attempts_two_for_charts_one_for_tables():
    """omnirender_rm_v3.py: get_reward_from_rm(retry=2) asks at most twice, then S = 25; table_parse_rm_v2.py
    asks once."""
    cfg = RewardConfig()
    assert (cfg.attempts("chart"), cfg.attempts("svg"), cfg.attempts("table")) == (2, 2, 1)
    backend = ScriptedBackend(cfg, ["no", "no", "no"])  # chart attempt 1, table attempt 1, chart attempt 2
    samples = [_sample("chart", 0), _sample("table", 1)]
    RewardScorer(cfg, backend=backend).score(samples)
    assert backend.calls == [("chart", 1, 1), ("chart", 1, 2), ("table", 1, 1)]
    assert [s.reward for s in samples] == pytest.approx([1 + (1 - 25 / 50), -4.0])


def test_table_failure_reward_is_minus_4_in_every_failure_path():
    """Official tables (table_parse_rm_v2.py: compute_score): −S, and −4 whatever went wrong in its one call.
    Every way our pipeline can fail a table sample that the policy is to blame for ends at −4; an
    infrastructure failure (a crashed renderer, an engine that gave no answer) is excluded from the update
    instead (reward None, `infrastructure_failure`), never scored."""
    cfg = RewardConfig()
    ok = json.dumps({"errors": [{"category": "numeric", "severity": 2, "location": "r1", "description": "x"}],
                     "counts": {"layout": 0, "text": 0, "numeric": 1}})
    script = [ok, "not json", '{"errors": 5}', '{"counts": {}}', "", RawAnswer(text="{\"err", finish_reason="length"),
              RawAnswer(error="backend:RuntimeError: engine died")]
    judged = [_sample("table", i) for i in range(len(script))]
    unjudged = [_sample("table", 20, code=None), _sample("table", 21, code="  \n"),
                _sample("table", 22, rendered_image=None, render_error="timeout"),
                _sample("table", 23, rendered_image=None, render_error="syntax_error"),
                _sample("table", 24, rendered_image=None),
                _sample("table", 25, rendered_image=b"not an image"),
                _sample("table", 26, rendered_image=None, render_error="crashed")]
    backend = ScriptedBackend(cfg, script)
    samples = judged + unjudged
    RewardScorer(cfg, backend=backend).score(samples)
    assert [c[2] for c in backend.calls] == [1]  # one call, no retry
    assert judged[0].reward == pytest.approx(-2.0)  # −S
    failed = judged[1:6] + unjudged[:6]
    assert [s.reward for s in failed] == [-4.0] * len(failed), [(s.failure, s.reward) for s in failed]
    assert all(s.failure for s in failed)
    # not JSON, `errors` not a list, no `errors` (official: KeyError → −4), empty, cut off at max tokens
    assert [s.failure.split(":")[1:3] for s in judged[1:6]] == [
        ["invalid_judgement", "not_json"], ["invalid_judgement", "schema"], ["invalid_judgement", "schema"],
        ["invalid_judgement", "empty"], ["invalid_judgement", "truncated"]]
    # Not the policy's doing: excluded, no reward (the engine gave no answer; the renderer crashed).
    assert judged[6].reward is None and judged[6].excluded.startswith("critic:")
    assert unjudged[6].reward is None and unjudged[6].excluded == "render_crashed"
    # Under the blank rule "tolerance" a blank table is a failure too: −4.
    tol = RewardConfig.model_validate({"formula": {"blank_rule": "tolerance"}})
    grey = _sample("table", 30, rendered_image=np.full((32, 32, 3), 128, np.uint8))
    RewardScorer(tol, backend=ScriptedBackend(tol, [])).score([grey])
    assert grey.reward == -4.0 and grey.failure == "reward:blank_image"
    # Invalid judgements under every rule give −4 on tables ("fixed_severity" gives −25: S = 25, as asked).
    for rule, expected in (("official", -4.0), ("fail", -4.0), ("fixed_severity", -25.0)):
        c = RewardConfig.model_validate({"formula": {"invalid_judgement": rule}})
        t = _sample("table", 31)
        RewardScorer(c, backend=ScriptedBackend(c, ["nope"])).score([t])
        assert t.reward == expected, rule


def test_official_parsing_scores_off_schema_answers_as_the_official_code_and_counts_them():
    """The default parsing rule reads an answer the schema rejects as omnirender_rm_v3.py / table_parse_rm_v2.py
    do (S from the items' severities; missing `errors` = S 0 on charts, −4 on tables); `strict` asks again and
    then counts S = 25 / −4. Each leniently read answer is counted, per sample and per backend."""
    from pipeline.loop.step_metrics import sample_metrics

    answers = ['```json\n{"errors": [{"category": "data_error", "severity": "3"}]}\n```',  # chart: S 3
               '{"verdict": "same"}',  # svg: no `errors` → S 0
               '{"errors": [{"type": "numeric_error"}, {"type": "text_error", "severity": 2}]}',  # table: −2
               '{"verdict": "same"}']  # table: no `errors` → −4
    tasks = ["chart", "svg", "table", "table"]
    official = RewardConfig()
    samples = [_sample(t, i) for i, t in enumerate(tasks)]
    backend = ScriptedBackend(official, [answers[0], answers[2], answers[3], answers[1]])  # chart, tables, svg
    RewardScorer(official, backend=backend).score(samples)
    assert [s.reward for s in samples] == pytest.approx([1 + (1 - 3 / 50), 2.0, -2.0, -4.0])
    assert [s.extra["judgement"]["lenient"] for s in samples] == [True, True, True, False]
    assert backend.stats.lenient_answers == 3 and backend.calls == [("chart", 1, 1), ("table", 2, 1), ("svg", 1, 1)]
    assert sample_metrics([samples], trainer_version=0)["judgement/lenient"] == 3

    strict = RewardConfig.model_validate({"tasks": {t: {"parsing": "strict"} for t in ("chart", "table", "svg")}})
    samples = [_sample(t, i) for i, t in enumerate(tasks)]
    # chart twice, then the tables once, then the SVG twice
    backend = ScriptedBackend(strict, [answers[0], "no", answers[2], answers[3], answers[1], "no"])
    RewardScorer(strict, backend=backend).score(samples)
    assert [s.reward for s in samples] == pytest.approx([1 + (1 - 25 / 50), 1 + (1 - 25 / 50), -4.0, -4.0])
    assert backend.stats.lenient_answers == 0
