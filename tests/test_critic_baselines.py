"""Non-learned critics (`pipeline/critic/baselines.py`): fitted statistics, judgements, and the evaluation
kinds trivial / pixel / structural end to end on a tiny critic set of synthetic images (no rendering)."""

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.critic.baselines import (
    CriticUnusable,
    PixelCritic,
    StructuralCritic,
    TrivialCritic,
    region_name,
)
from pipeline.critic.training.dataset import CriticExample, make_row, write_dataset
from pipeline.evaluate.benchmark import evaluate_critic
from pipeline.evaluate.config import CriticEvalConfig, CriticSource
from pipeline.evaluate.records import iter_bench_items
from pipeline.sample import JudgementLimits

LIMITS = JudgementLimits()
SIDE = 48
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
       '<rect x="4" y="4" width="20" height="20" fill="#ff0000"/>'
       '<circle cx="30" cy="30" r="6" fill="#0000ff"/></svg>')


def err(category, severity=2, location="", description=""):
    return {"category": category, "severity": severity, "location": location, "description": description}


def blank(value=255):
    return np.full((SIDE, SIDE, 3), value, np.uint8)


def with_block(row: int, col: int, value=0) -> np.ndarray:
    """A white image with one dark square filling the (row, col) cell of the 3×3 grid."""
    im = blank()
    s = SIDE // 3
    im[row * s:(row + 1) * s, col * s:(col + 1) * s] = value
    return im


_IDS = itertools.count()


def ex(task, errors, ref=None, cand=None):
    ref = blank() if ref is None else ref
    return CriticExample(f"{task}/{next(_IDS)}", task, "edit" if errors else "clean", "edit-engine", ref,
                         ref if cand is None else cand, errors, "")


# ---------------------------------------------------------------------------------------------------------
# fitted statistics
# ---------------------------------------------------------------------------------------------------------
def test_trivial_picks_the_most_frequent_category_and_text():
    train = [
        ex("chart", [err("data", 3, "bar 2", "bar 2 is too tall"), err("text", 1, "title", "typo")]),
        ex("chart", [err("data", 1, "bar 2", "bar 2 is too tall")]),
        ex("chart", [err("data", 2, "bar 4", "bar 4 is too short")]),
        ex("chart", []),
        ex("table", [err("numeric", 2, "row 1", "b"), err("text", 2, "row 2", "a")]),  # a tie of categories
        ex("svg", [err("style", 2, "z", "same"), err("style", 2, "a", "same")]),  # a tie of texts
    ]
    critic = TrivialCritic().fit(train)
    assert critic.judge("chart", None, None) == [err("data", 2, "bar 2", "bar 2 is too tall")]
    # Category tie: the task's schema order decides (table: layout, text, numeric), not the row order.
    assert critic.judge("table", None, None) == [err("text", 2, "row 2", "a")]
    # Text tie: the lexicographically smallest (location, description).
    assert critic.judge("svg", None, None) == [err("style", 2, "a", "same")]
    # The same answer whatever the order of the training rows.
    assert TrivialCritic().fit(train[::-1]).answers == critic.answers
    # A task without any training label: the constant the training set suggests is "nothing wrong".
    assert TrivialCritic().fit(train[:4]).judge("svg", None, None) == []


def test_pixel_threshold_and_severity_fits():
    # Different iff SSIM < cut; the best cut separates {0.5, 0.6} from {1.0}: halfway, 0.8.
    cut = PixelCritic.fit_threshold([1.0, 1.0, 0.5, 0.6], [False, False, True, True], 0.9)
    assert cut == pytest.approx(0.8)
    # Every training pair is different: the cut lies just above the highest SSIM.
    cut = PixelCritic.fit_threshold([0.7, 0.9], [True, True], 0.9)
    assert cut > 0.9 and 0.9 < cut < 0.9 + 1e-9
    assert PixelCritic.fit_threshold([], [], 0.97) == 0.97
    # Quantile matching: a third of each severity → the cut-offs split the dissimilarities into thirds.
    c1, c2 = PixelCritic.fit_severity([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 3, 2, 1, 3, 2])
    assert (c1, c2) == (0.2, 0.4)
    assert PixelCritic.fit_severity([0.1, 0.2], [2, 2]) == (-np.inf, np.inf)  # only severity 2
    assert [region_name(0, 0), region_name(1, 1), region_name(2, 2)] == ["top left", "center", "bottom right"]


def pixel_training_set():
    """Clean pairs (identical) and different pairs: a dark block appears in some cell; blocks on top are
    labelled `text` errors, the others `data` ones (so the per-region category statistic has a signal)."""
    train = [ex("chart", []) for _ in range(4)]
    for col in range(3):
        for severity, value in ((2, 0), (1, 128)):
            train.append(ex("chart", [err("text", severity, "title", "the title is wrong")],
                            cand=with_block(0, col, value)))
    for row, col in [(2, 0), (2, 2), (1, 2), (2, 1)]:
        train.append(ex("chart", [err("data", 3, "bar 3", "bar 3 is too tall")], cand=with_block(row, col)))
    return train


def test_pixel_critic_same_and_different():
    critic = PixelCritic(min_region_support=1).fit(pixel_training_set())
    assert critic.thresholds["chart"] < 1.0
    assert critic.judge("chart", with_block(1, 1), with_block(1, 1)) == []
    assert critic.judge("chart", blank(), blank()) == []
    # Same content at another resolution: brought to a common size, it still compares equal.
    big = np.kron(with_block(2, 0), np.ones((2, 2, 1), np.uint8))
    assert critic.judge("chart", with_block(2, 0), big) == []
    out = critic.judge("chart", blank(), with_block(2, 2))
    assert len(out) == 1 and out[0]["location"] == "bottom right"
    assert out[0]["category"] == "data" and out[0]["description"] == "bar 3 is too tall"
    assert out[0]["severity"] in (1, 2, 3)
    top = critic.judge("chart", blank(), with_block(0, 1))
    assert top[0]["location"] == "top center" and top[0]["category"] == "text"  # the cell's own statistic
    # Without the per-region statistic the task's most frequent category (text: 6 labels vs 4) is used.
    flat = PixelCritic(per_region=False).fit(pixel_training_set())
    assert flat.judge("chart", blank(), with_block(2, 2))[0]["category"] == "text"


def test_structural_critic_identical_pair_and_missing_code():
    critic = StructuralCritic().fit([])
    assert critic.judge("svg", None, None, SVG, SVG) == []
    with pytest.raises(CriticUnusable):
        critic.judge("svg", None, None, SVG, None)
    with pytest.raises(CriticUnusable):
        critic.judge("chart", None, None, "", "x = 1")


# ---------------------------------------------------------------------------------------------------------
# the evaluation kinds, end to end on a critic set written to disk
# ---------------------------------------------------------------------------------------------------------
def write_set(path, specs, split):
    rows = [make_row(task=task, source=source, teacher="edit-engine", index=i, split=split, seed=0,
                     reference=ref, rendering=cand, errors=errors, limits=LIMITS, reference_code=rc,
                     candidate_code=cc)
            for i, (task, source, ref, cand, errors, rc, cc) in enumerate(specs)]
    write_dataset(rows, path, LIMITS)
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("critic-sets")
    bar2 = err("data", 3, "bar 2", "bar 2 is too tall")
    train = write_set(root / "train", [
        ("chart", "edit", blank(), with_block(2, 0), [bar2], "", ""),
        ("chart", "edit", blank(), with_block(2, 1), [err("data", 1, "bar 2", "bar 2 is too tall")], "", ""),
        ("chart", "edit", blank(), with_block(0, 1), [err("text", 2, "title", "title is missing")], "", ""),
        ("chart", "clean", blank(), blank(), [], "", ""),
        ("svg", "edit", blank(), with_block(1, 1), [err("style", 2, "red rectangle", "wrong fill")], "", ""),
        ("svg", "clean", blank(), blank(), [], "", ""),
    ], "critic-train")
    blue = SVG.replace("#ff0000", "#00ff00")
    heldout = write_set(root / "heldout", [
        # chart rows carry no programs: the structural critic cannot judge them
        ("chart", "edit", blank(), with_block(2, 0), [bar2], "", ""),  # trivial: a full match
        ("chart", "edit", blank(), with_block(0, 0), [err("text", 1, "title", "title misspelled")], "", ""),
        ("chart", "clean", blank(), blank(), [], "", ""),  # trivial: one false positive
        ("chart", "edit", blank(), with_block(2, 2),
         [err("data", 2, "bar 2", "bar 2 value is too tall"), err("style", 1, "grid", "no grid")], "", ""),
        ("svg", "clean", blank(), blank(), [], SVG, SVG),
        ("svg", "edit", blank(), with_block(0, 2), [err("style", 2, "red rectangle", "wrong fill")],
         SVG, blue),
    ], "critic-heldout")
    return train, heldout


def test_bench_items_carry_codes_and_source(sets, tmp_path):
    _, heldout = sets
    items = list(iter_bench_items(heldout))
    svg = [i for i in items if i.task == "svg"]
    assert {i.source for i in items} == {"edit", "clean"}
    assert svg[0].reference_code == SVG and svg[0].candidate_code in (SVG, SVG.replace("#ff0000", "#00ff00"))
    assert all(i.reference_code is None and i.candidate_code is None for i in items if i.task == "chart")
    # Targeted-edit sets name the candidate program `edited_code`; older rows carry no codes at all.
    rows = [{"id": "a", "images": [{"bytes": b"x"}, {"bytes": b"y"}],
             "extra_info": {"task": "svg", "errors": [], "reference_code": "R", "edited_code": "E"}},
            {"id": "b", "images": [{"bytes": b"x"}, {"bytes": b"y"}],
             "extra_info": {"task": "svg", "errors": []}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "edits.parquet")
    a, b = iter_bench_items(tmp_path / "edits.parquet")
    assert (a.reference_code, a.candidate_code, a.source) == ("R", "E", None)
    assert (b.reference_code, b.candidate_code) == (None, None)


def test_trivial_f1_by_hand(sets):
    train, heldout = sets
    config = CriticEvalConfig(critic=CriticSource(kind="trivial", fit_data=str(train)))
    report = evaluate_critic(heldout, config, progress=False)
    chart = report["summary"]["chart"]
    # Trivial chart answer: data, severity 2, "bar 2" / "bar 2 is too tall" (2 of 3 chart labels).
    # Items: full match | category miss | false positive on a clean pair | full match (Dice 8/9) among 2.
    # Pooled: 4 predicted, 1 + 1 + 0 + 2 = 4 annotated, 2 full → P = R = F1 = 0.5.
    assert (chart["n_predicted"], chart["n_annotated"], chart["full_matches"]) == (4, 4, 2)
    assert chart["f1_hard"] == pytest.approx(0.5)
    assert report["critic_unusable_answers"] == 0
    assert report["critic_items_by_task"] == {"chart": 4, "svg": 2}
    # Split by source: on the clean rows only, the constant answer is always wrong.
    clean = evaluate_critic(heldout, config, progress=False, sources=["clean"])
    assert clean["summary"]["overall"]["items"] == 2 and clean["summary"]["overall"]["f1_hard"] == 0.0


def test_pixel_and_structural_kinds_end_to_end(sets):
    train, heldout = sets
    config = CriticEvalConfig(critic=CriticSource(kind="pixel", fit_data=str(train)))
    pixel = evaluate_critic(heldout, config, progress=False)
    assert pixel["summary"]["overall"]["items"] == 6 and pixel["critic_unusable_answers"] == 0
    by_id = {i["id"]: i for i in pixel["items"]}
    assert by_id["chart/clean/critic-heldout/2"]["n_predicted"] == 0  # identical images: nothing found
    assert by_id["chart/edit/critic-heldout/0"]["n_predicted"] == 1
    assert pixel["critic_seconds"] > 0

    config = CriticEvalConfig(critic=CriticSource(kind="structural"))
    structural = evaluate_critic(heldout, config, progress=False)
    # The four chart rows carry no programs: unusable answers, scored as "found nothing".
    assert structural["critic_unusable_by_task"] == {"chart": 4}
    by_id = {i["id"]: i for i in structural["items"]}
    assert by_id["svg/clean/critic-heldout/4"]["n_predicted"] == 0
    assert by_id["svg/edit/critic-heldout/5"]["n_predicted"] >= 1  # a changed fill


def test_baseline_kinds_need_fit_data():
    with pytest.raises(ValueError, match="fit_data"):
        CriticSource(kind="pixel")
    CriticSource(kind="structural")
