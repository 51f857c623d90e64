"""The HF backend for real on CPU: a tiny random Qwen3-VL reward model, constrained by xgrammar to the task's
JSON Schema, answers schema-valid judgements for every pair; the CLI prints judgement and reward."""

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.critic.backends.hf import PresencePenalty
from pipeline.critic.config import RewardConfig
from pipeline.critic.schema import json_schema
from pipeline.critic.scorer import RewardScorer, prepare_models
from pipeline.critic.testing import random_samples, tiny_reward_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rm_models(models_cfg):
    return prepare_models(models_cfg)


@pytest.fixture(scope="module")
def broad_scorer(rm_models):
    """Plain sampling at temperature 1 for every task: a random model then wanders over far more of what the
    grammar allows than under the paper's top-p/top-k (which, on a random model, always pick the same
    branch), so 'zero parse failures' covers long, varied answers, not one memorised shape."""
    plain = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "presence_penalty": 1.5}
    base = tiny_reward_config()
    cfg = tiny_reward_config(tasks={t: {"sampling": {**base.sampling(t).model_dump(), **plain}}
                                    for t in ("chart", "table", "svg")})
    scorer = RewardScorer(cfg, rm_models)
    yield scorer
    scorer.close()


def test_200_random_pairs_give_schema_valid_judgements_and_rewards(broad_scorer):
    tiny_scorer = broad_scorer
    samples = random_samples(200, seed=1)
    t0 = time.perf_counter()
    stats = tiny_scorer.score(samples)
    elapsed = time.perf_counter() - t0
    backend = tiny_scorer.backend
    print(f"\n200 pairs in {elapsed:.1f} s ({200 / elapsed:.1f} pairs/s); backend stats {vars(backend.stats)}")
    # Zero parse failures: not one answer needed a retry, and every judgement is valid.
    assert backend.stats.pairs == 200 and backend.stats.generated == 200
    assert backend.stats.invalid_answers == 0 and stats["invalid_judgements"] == 0
    validators = {t: jsonschema.Draft202012Validator(json_schema(t, tiny_scorer.cfg.limits))
                  for t in ("chart", "table", "svg")}
    n_errors = 0
    for s in samples:
        j = s.extra["judgement"]
        assert j["valid"] and j["attempts"] == 1 and s.failure is None
        # Re-check the discrepancies against the schema independently of the parser.
        doc = {"errors": s.discrepancies, "counts": j["counts"]}
        assert not list(validators[s.task].iter_errors(doc))
        assert s.reward is not None and np.isfinite(s.reward)
        b = s.reward_breakdown
        assert {"visual_erm_paper", "render_success", "total", "visual_erm_paper/severity"} <= set(b)
        assert b["total"] == pytest.approx(b["visual_erm_paper"] + b["render_success"])
        assert b["visual_erm_paper/severity"] == sum(d["severity"] for d in s.discrepancies)
        assert 1.0 <= s.reward <= 2.0
        n_errors += len(s.discrepancies)
    assert n_errors > 0  # the random critic does list discrepancies: the check above is not vacuous
    assert {len(s.discrepancies) for s in samples} >= {0, 1, 2}  # empty, one and several errors


def test_batched_generate_matches_max_batch_size(rm_models):
    cfg = tiny_reward_config(hf={"max_batch_size": 4})
    scorer = RewardScorer(cfg, rm_models)
    calls = []
    original = scorer.backend._generate_batch
    scorer.backend._generate_batch = lambda task, pairs: calls.append((task, len(pairs))) or original(task, pairs)
    samples = random_samples(10, seed=2)  # 4 charts, 3 tables, 3 svgs
    scorer.score(samples)
    assert calls == [("chart", 4), ("table", 3), ("svg", 3)]
    assert all(s.extra["judgement"]["valid"] for s in samples)


def test_greedy_tables_are_deterministic(rm_models):
    scorer = RewardScorer(tiny_reward_config(), rm_models)
    pair = [s for s in random_samples(6, seed=3) if s.task == "table"][:1]
    again = [s for s in random_samples(6, seed=3) if s.task == "table"][:1]
    scorer.score(pair)
    scorer.score(again)
    assert pair[0].discrepancies == again[0].discrepancies
    assert pair[0].extra["judgement"]["counts"] == again[0].extra["judgement"]["counts"]


def test_too_small_token_budget_is_a_counted_truncation_not_a_crash(rm_models):
    data = tiny_reward_config().model_dump()
    data["max_attempts"] = 1
    data["tasks"]["chart"]["sampling"]["max_new_tokens"] = 16
    scorer = RewardScorer(RewardConfig.model_validate(data), rm_models)
    samples = [s for s in random_samples(24, seed=4) if s.task == "chart"]
    stats = scorer.score(samples)
    reasons = [s.extra["judgement"]["reason"] for s in samples]
    assert set(reasons) <= {None, "truncated"} and reasons.count("truncated") >= 1
    assert stats["invalid_judgements"] == reasons.count("truncated")
    assert all(s.reward is not None for s in samples)  # invalid → S = 25 (official rule), still scored


def test_presence_penalty_by_hand():
    pp = PresencePenalty(prompt_len=2, penalty=1.5)
    ids = torch.tensor([[7, 1, 3, 3], [7, 1, 0, 2]])  # prompt [7, 1]; generated [3, 3] and [0, 2]
    scores = torch.zeros(2, 5)
    out = pp(ids, scores)
    assert out.tolist() == [[0, 0, 0, -1.5, 0], [-1.5, 0, -1.5, 0, 0]]  # once per token, prompt ignored


def test_images_are_resized_to_at_most_1024_px():
    from pipeline.critic.backends.base import JudgeRequest
    from pipeline.critic.backends.fingerprint import FingerprintBackend

    backend = FingerprintBackend(RewardConfig())
    ref, pred = backend.prepare(JudgeRequest("chart", np.zeros((600, 2048, 3), np.uint8),
                                             np.zeros((100, 80, 3), np.uint8)))
    assert ref.size == (1024, 300) and pred.size == (80, 100)  # long side capped, aspect kept, no upscaling


def _cli(tmp_path, rm_models, *extra):
    cmd = [sys.executable, "-m", "pipeline.critic", "judge", "chart", "--ref", str(tmp_path / "ref.png"), *extra,
           f"models.cache_dir={rm_models.cache_dir}", "models.reward.tiny.train.steps=0", "reward.limits.max_errors=2",
           "reward.limits.max_location_chars=16", "reward.limits.max_description_chars=32",
           "reward.tasks.chart.sampling.max_new_tokens=600"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)


def test_cli_prints_judgement_and_reward_breakdown(tmp_path, rm_models):
    ref = np.full((300, 1400, 3), 255, np.uint8)
    ref[50:100, 100:400] = (200, 30, 30)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    ref[50:100, 100:300] = (30, 30, 200)
    Image.fromarray(ref).save(tmp_path / "pred.png")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    (tmp_path / "code.py").write_text("import matplotlib.pyplot as plt\nplt.bar([1], [2])\n")
    run = _cli(tmp_path, rm_models, "--pred", str(tmp_path / "pred.png"), "--code", str(tmp_path / "code.py"))
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["backend"] == "hf" and out["judgement"]["valid"] and out["failure"] is None
    assert out["breakdown"]["total"] == out["reward"] and 1.0 <= out["reward"] <= 2.0
    assert isinstance(out["discrepancies"], list)
    bad = _cli(tmp_path, rm_models, "--pred", str(tmp_path / "bad.png"), "--backend", "hf")
    assert bad.returncode == 0, bad.stderr[-2000:]
    out = json.loads(bad.stdout)
    assert out["reward"] == 0.0 and out["failure"].startswith("reward:bad_input:rendered image")
    typo = _cli(tmp_path, rm_models, "--pred", str(tmp_path / "pred.png"), "reward.bakend=hf")
    assert typo.returncode == 2 and "bakend" in typo.stderr
