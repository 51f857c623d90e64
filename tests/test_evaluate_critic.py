"""VC-RewardBench metrics against hand-computed cases."""

import math

import pytest

from pipeline.evaluate.critic import (
    Counts, Discrepancy, LLMJudgeMatcher, Match, RecordError, SimilarityMatcher, evaluate_predictions,
    normalize_category, parse_discrepancies, pearson, score_item, summarize,
)


def d(cat, sev=2, loc="", desc=""):
    return {"category": cat, "severity": sev, "location": loc, "description": desc}


class FixedMatcher:
    """Returns preset matches so the F1 arithmetic is tested apart from matching."""

    def __init__(self, matches):
        self.matches = matches

    def __call__(self, task, predicted, annotated):
        return self.matches


def test_category_normalisation():
    assert normalize_category("Structure_Error", "chart") == "structure"
    assert normalize_category("text symbol error", "svg") == "text_symbol"
    assert normalize_category("numeric_error", "table") == "numeric"
    assert normalize_category("data_error", "table") == "invalid:data_error"  # not a table category
    errs = parse_discrepancies({"errors": [{"type": "layout_error", "severity": "3", "description": "x"}]}, "table")
    assert errs == [Discrepancy("layout", 3, "", "x")]
    assert parse_discrepancies([{"category": "text", "severity": 9}], "chart")[0].severity == 0
    with pytest.raises(RecordError):
        parse_discrepancies("not a list", "chart")


def test_perfect_match():
    ann = [d("data", 3, "bar 2", "bar 2 value is too high"), d("text", 1, "title", "title misspelled")]
    summary, items = evaluate_predictions([("a", "chart", ann, ann)])
    assert summary["chart"]["f1_hard"] == 1.0 and summary["chart"]["f1_soft"] == 1.0
    assert items[0].counts == Counts(2, 2, 2, 0)


def test_disjoint_categories_never_match():
    pred = [d("style", 2, "bar 2", "bar 2 value is too high")]
    ann = [d("data", 2, "bar 2", "bar 2 value is too high")]
    summary, _ = evaluate_predictions([("a", "chart", pred, ann)])
    assert summary["overall"]["f1_hard"] == 0.0 and summary["overall"]["f1_soft"] == 0.0


def test_partial_match_arithmetic_strict_and_official():
    # 3 predicted, 2 annotated; one full match, one partial, one spurious prediction.
    c = Counts(n_predicted=3, n_annotated=2, full=1, partial=1)
    assert c.f1(soft=False) == pytest.approx(0.4)  # P 1/3, R 1/2
    assert c.f1(soft=True) == pytest.approx(0.6)  # tp 1.5: P 0.5, R 0.75
    assert c.f1(soft=False, counting="official") == pytest.approx(2 / 3)  # fp 1, fn 0: P 1/2, R 1
    assert c.f1(soft=True, counting="official") == pytest.approx(0.75)  # P 1.5/2.5, R 1


def test_empty_vs_empty_is_one_and_empty_vs_nonempty_is_zero():
    summary, items = evaluate_predictions([("a", "svg", [], []), ("b", "svg", {"errors": []}, None)])
    assert summary["svg"]["f1_hard"] == 1.0 and summary["overall"]["f1_soft"] == 1.0
    summary, _ = evaluate_predictions([("a", "svg", [], [d("shape")])])
    assert summary["svg"]["f1_hard"] == 0.0
    summary, _ = evaluate_predictions([("a", "svg", [d("shape")], [])])
    assert summary["svg"]["f1_soft"] == 0.0


def test_pooled_counts_across_items_and_tasks():
    m = FixedMatcher([Match(0, 0, "full")])
    r1 = score_item("1", "chart", parse_discrepancies([d("data")], "chart"),
                    parse_discrepancies([d("data")], "chart"), m)
    r2 = score_item("2", "table", parse_discrepancies([d("text"), d("layout")], "table"),
                    parse_discrepancies([d("text"), d("numeric"), d("layout")], "table"),
                    FixedMatcher([Match(0, 0, "full"), Match(1, 2, "partial")]))
    s = summarize([r1, r2])
    assert s["chart"]["f1_hard"] == 1.0
    # table: P 1/2 R 1/3 → hard F1 0.4; soft tp 1.5: P 0.75 R 0.5 → 0.6
    assert s["table"]["f1_hard"] == pytest.approx(0.4) and s["table"]["f1_soft"] == pytest.approx(0.6)
    # overall: pred 3, ann 4, full 2, partial 1 → hard P 2/3 R 1/2 → 4/7
    assert s["overall"]["f1_hard"] == pytest.approx(4 / 7)
    assert s["overall"]["items"] == 2


def test_severity_pearson():
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # cov 4 / sqrt(5*5)
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(pearson([2, 2, 2], [1, 2, 3]))
    assert math.isnan(pearson([1], [1]))
    items = [
        ("a", "chart", [d("data", 1)], [d("data", 1)]),
        ("b", "chart", [d("data", 3), d("text", 3)], [d("data", 3)]),
        ("c", "chart", [], [d("style", 2)]),
    ]
    summary, results = evaluate_predictions(items)
    assert [r.severity_predicted for r in results] == [1, 6, 0]
    assert summary["chart"]["severity_pearson"] == pytest.approx(pearson([1, 6, 0], [1, 3, 2]))


def test_similarity_matcher_is_one_to_one_and_graded():
    m = SimilarityMatcher()
    ann = parse_discrepancies([d("data", 2, "third bar", "third bar value too high"),
                               d("data", 2, "first bar", "first bar missing")], "chart")
    pred = parse_discrepancies([d("data", 2, "first bar", "first bar missing"),
                                d("data", 2, "", "value too high"),
                                d("data", 2, "third bar", "third bar value too high")], "chart")
    matches = m("chart", pred, ann)
    # each annotated item gets exactly one predicted partner, the best one
    assert sorted((x.predicted, x.annotated, x.level) for x in matches) == [(0, 1, "full"), (2, 0, "full")]
    # an unrelated description of the same category is not a match
    unrelated = parse_discrepancies([d("data", 2, "legend", "colour palette differs entirely")], "chart")
    assert m("chart", unrelated, ann[:1]) == []


def test_invalid_predicted_category_counts_as_false_positive():
    summary, results = evaluate_predictions([("a", "table", [d("data"), d("text", 1, "", "x")],
                                                [d("text", 1, "", "x")])])
    assert results[0].invalid_predicted == 1
    assert summary["table"]["f1_hard"] == pytest.approx(2 / 3)  # P 1/2, R 1


def test_invalid_annotation_is_a_clear_error():
    with pytest.raises(RecordError, match="annotated categories"):
        evaluate_predictions([("a", "table", [], [d("shape")])])


def test_llm_judge_matcher_asks_same_category_pairs_and_counts_failures():
    pred = parse_discrepancies([d("data", 2, "bar", "bar too high"), d("text", 1, "title", "typo"),
                                d("data", 1, "bar 3", "colour")], "chart")
    ann = parse_discrepancies([d("data", 2, "bar", "bar too high"), d("style", 1, "title", "typo"),
                               d("data", 1, "bar 3", "wrong colour")], "chart")
    asked = []
    # pairs asked (same category only): (0,0) (0,2) (2,0) (2,2); scripted per prompt content
    script = {("bar too high", "bar too high"): '{"verdict":"yes"}',
              ("colour", "wrong colour"): '{"verdict":"partial"}'}

    def judge(prompts):
        asked.extend(prompts)
        out = []
        for p in prompts:
            x, y = (line.split('"description": "')[1].split('"')[0] for line in p.splitlines()
                    if line.startswith(("X:", "Y:")))
            out.append(script.get((x, y), '{"verdict":"no"}'))
        return out

    matcher = LLMJudgeMatcher(judge)
    assert matcher("chart", pred, ann) == [Match(0, 0, "full"), Match(2, 2, "partial")]
    assert len(asked) == 4 and matcher.judge_failures == 0
    assert matcher.verdicts == {"yes": 1, "partial": 1, "no": 2}

    # Invalid JSON is retried; still invalid after max_attempts → judge failure, scored as "no".
    answers = iter(['not json', '{"verdict":"yes"}', 'nope', '{"verdict":"maybe"}'])
    flaky = LLMJudgeMatcher(lambda prompts: [next(answers) for _ in prompts], max_attempts=2)
    one = parse_discrepancies([d("data", 2, "bar", "x")], "chart")
    assert flaky("chart", one, one) == [Match(0, 0, "full")]  # second attempt answered
    assert flaky.judge_retries == 1 and flaky.judge_failures == 0
    assert flaky("chart", one, one) == []  # 'nope', then a verdict outside the schema
    assert flaky.judge_failures == 1 and flaky.verdicts["no"] == 1
    # A judge that answers the wrong number of items is a failure for each pair, not a crash.
    short = LLMJudgeMatcher(lambda prompts: [], max_attempts=1)
    assert short("chart", one, one) == [] and short.judge_failures == 1
