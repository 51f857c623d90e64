"""Look before you trust (`pipeline/critic/image_use.py`, `benchmarks/critic.py`'s image-use columns): the
teacher-forced answer likelihoods really feed each pair's (or the swapped pair's) pixels, match the critic SFT
loss token for token, the AUROC helper counts as it says, and the structural oracle separates clean from edited
pairs on a small built held-out set."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.critic.image_use import AnswerScorer, derangement
from pipeline.metrics.critic import auroc
from tests.conftest import RANDOM_CRITIC

REPO = Path(__file__).resolve().parent.parent
ERROR = {"category": "data", "severity": 2, "location": "bar 2", "description": "bar 2 is too tall"}


def _bench():
    spec = importlib.util.spec_from_file_location("critic_benchmark", REPO / "benchmarks" / "critic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------------------
def test_auroc_counts_separation_ties_and_the_undefined_case():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([5.0, 5.0], [5.0, 5.0]) == 0.5  # a constant score separates nothing
    assert auroc([1.0, 3.0], [2.0]) == 0.5
    assert auroc([2.0, 3.0], [2.0, 1.0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)  # a tie counts ½
    assert math.isnan(auroc([], [1.0])) and math.isnan(auroc([1.0], []))


def test_derangement_moves_every_pair_and_is_seeded():
    for n in range(2, 12):
        for seed in range(5):
            p = derangement(n, seed)
            assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
            assert p == derangement(n, seed)
    assert derangement(8, 0) != derangement(8, 1)
    assert derangement(1, 0) is None and derangement(0, 0) is None


# ---------------------------------------------------------------------------------------------------------
# the tiny random critic
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def critic(model_cache):
    """The session's random tiny critic (the conftest `models_cfg` reward; its policy is not needed here)."""
    from pipeline.config import load_config
    from pipeline.models import load_model_and_processor
    from pipeline.tiny import ensure_models

    models = ensure_models(load_config(None, [f"models.cache_dir={model_cache}", *RANDOM_CRITIC]).models,
                           policy=False)
    model, processor = load_model_and_processor(models.reward)
    return model.eval(), processor


def _pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n pairs of distinct images (white with a few coloured blocks, different per pair)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pair = []
        for _ in range(2):
            im = np.full((48, 64, 3), 255, np.uint8)
            for _ in range(4):
                y, x = rng.integers(0, 40), rng.integers(0, 56)
                im[y:y + 8, x:x + 8] = rng.integers(0, 255, 3)
            pair.append(im)
        out.append(tuple(pair))
    return out


def test_swap_test_feeds_the_partner_pairs_pixels(critic):
    model, processor = critic
    seen: list[torch.Tensor] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    try:
        scorer = AnswerScorer(model, processor, batch_size=1, threads=1)
        pairs = _pairs(4)
        answers = [scorer.answer("chart", [ERROR]), scorer.nothing_wrong("chart")] * 2
        true, swapped = scorer.swap_test("chart", pairs, answers, seed=3)
    finally:
        hook.remove()
    p = derangement(4, 3)
    assert len(seen) == 8  # one forward per pair (batch_size 1): 4 true, then 4 swapped
    true_px, swapped_px = seen[:4], seen[4:]
    for i in range(4):
        assert torch.equal(swapped_px[i], true_px[p[i]])  # the partner's pixels, exactly
        assert not torch.equal(swapped_px[i], true_px[i])
    for t, w, answer in zip(true, swapped, answers):
        assert t.tokens == w.tokens == len(scorer.answer_ids("chart", answer))
        assert math.isfinite(t.nll) and math.isfinite(w.nll) and t.nll > 0
    # Same answers, other images: the likelihoods move (a random model still reads its vision tokens).
    assert any(abs(t.logprob - w.logprob) > 1e-6 for t, w in zip(true, swapped))


def test_batched_scores_equal_one_by_one_and_only_images_move_them(critic):
    model, processor = critic
    pairs = _pairs(5, seed=1)
    scorer = AnswerScorer(model, processor, batch_size=3)
    answers = [scorer.answer("svg", [{**ERROR, "category": "style"}])] * 3 + [scorer.nothing_wrong("svg")] * 2
    batched = scorer.score("svg", pairs, answers)  # right padding: answers of different lengths in one batch
    scorer.batch_size = 1
    single = scorer.score("svg", pairs, answers)
    for b, s in zip(batched, single):
        assert b.tokens == s.tokens and b.logprob == pytest.approx(s.logprob, abs=1e-3)
    # Every pair showing the same two images: swapping images changes nothing, to the last bit.
    same = [pairs[0]] * 4
    true, swapped = scorer.swap_test("svg", same, answers[:4], seed=0)
    assert [t.logprob for t in true] == [w.logprob for w in swapped]


def test_nll_is_the_critic_sft_loss_of_the_same_example(critic):
    """The scored text, images and answer tokens are what critic SFT trains on (`sft.Encoder`, `answer_loss`)."""
    from pipeline.critic.config import RewardConfig
    from pipeline.critic.training.dataset import CriticExample
    from pipeline.critic.training.sft import Encoder, answer_loss
    from pipeline.models.processor import collate

    model, processor = critic
    scorer = AnswerScorer(model, processor, RewardConfig())
    (ref, rend), = _pairs(1, seed=2)
    answer = scorer.answer("table", [{**ERROR, "category": "numeric"}])
    encoder = Encoder(processor, RewardConfig().max_image_side)
    example = CriticExample("t/0", "table", "edit", "edit-engine", ref, rend, [], answer)
    ids = encoder.answer_ids(example)
    batch = collate([encoder.encode(example, ids)], processor.tokenizer.pad_token_id)
    labels = batch.pop("labels")
    with torch.no_grad():
        loss = float(answer_loss(model, batch, labels))
    (score,) = scorer.score("table", [(ref, rend)], [answer])
    assert score.tokens == len(ids)
    assert -score.logprob == pytest.approx(loss, rel=1e-4)


# ---------------------------------------------------------------------------------------------------------
# the benchmark's clean test on a small built held-out set
# ---------------------------------------------------------------------------------------------------------
def test_structural_oracle_separates_clean_from_edited_pairs(tmp_path):
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset

    heldout = tmp_path / "heldout"
    build_critic_dataset(CriticDataConfig(split="critic-heldout", edits_per_task=3, clean_per_task=2,
                                          natural_per_task=0), heldout, progress=False)
    bench = _bench()
    assert bench.main(["--heldout", str(heldout), "--critics", "structural", "--out", str(tmp_path / "out"),
                       "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "critic.json").read_text())
    rows = {(r["set"], r["task"]): r for r in report["rows"]}
    overall = rows[("edit", "overall")]
    assert (overall["n_clean"], overall["n_flawed"]) == (6, 9)
    assert overall["auroc_clean"] >= 0.9
    assert overall["nll_true"] is None and overall["delta_nll"] is None  # no likelihoods for a baseline
    table = (tmp_path / "out" / "critic.md").read_text()
    assert "| NLL true | NLL swapped | ΔNLL | AUROC clean |" in table.splitlines()[0]
    # The clean test's scores are minus the severity totals: 0 for the clean pairs an exact differ finds equal.
    scores = report["details"]["structural/edit"]["clean_test_scores"]
    assert all(v == 0 for k, v in scores.items() if "/clean/" in k)
