"""VC-RewardBench metrics against hand-computed cases."""

import math

import pytest

from pipeline.metrics.critic import (
    Counts,
    Discrepancy,
    LLMJudgeMatcher,
    Match,
    RecordError,
    SimilarityMatcher,
    evaluate_predictions,
    normalize_category,
    parse_discrepancies,
    pearson,
    score_item,
    summarize,
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


# -- the official counting (InternLM/Visual-ERM evaluation/evaluation.py), reproduced --------------------
def test_official_counting_on_a_hand_made_set():
    """Four chart items and one table item, the judge's answers scripted per item.

    item A  pred [data "bar 2 too tall", style "red bars", text_x "??" (unknown: dropped)]
            gt   [data "bar 2 too high", text "title typo"]
            judge: pred 0 ↔ gt 0 "yes"; pred 1 ↔ gt 1 "partial" (categories differ: allowed)
            → tp_hard 1, tp_soft 1.5, fp 0, fn 0
    item B  pred [style "line dashed"]   gt []            → no judge call; fp 1
    item C  pred []   gt [structure "legend missing"]     → no judge call; fn 1
    item D  pred [data "x"]  gt [data "y"]  judge answer is not JSON → the item is DROPPED
    item E  (table) pred [numeric "cell 3"], gt [numeric "cell 3", layout "row missing"]
            judge: pred 0 ↔ gt 0 "yes", unmatched_gt [1] → tp 1, fp 0, fn 1
    Chart, pooled over A, B, C: tp_hard 1, tp_soft 1.5, fp 1, fn 1.
      F1 hard: P = 1/2, R = 1/2 → 0.5.   F1 soft: P = 1.5/2.5 = 0.6, R = 0.6 → 0.6.
    Overall (A, B, C, E): tp_hard 2, tp_soft 2.5, fp 1, fn 2.
      F1 hard: P = 2/3, R = 2/4 → 2·(2/3·1/2)/(2/3+1/2) = (2/3)/(7/6) = 4/7.
      F1 soft: P = 2.5/3.5 = 5/7, R = 2.5/4.5 = 5/9 → 2·(25/63)/(5/7+5/9) = (50/63)/(80/63) = 5/8.
    Per type (chart): data: tp 1 (A), fp 0, fn 0 → F1 1.0; style: tp_soft 0.5 (A's partial counts for the
      predicted style error), fp 1 (B) → hard P 0/1 → F1 hard 0.0, soft P = 0.5/1.5, R = 0.5/0.5 = 1 →
      2·(1/3)/(4/3) = 0.5; text: fn 0 (gt 1 was matched) → tp = fp = fn = 0 → F1 hard 1.0.
    Severity Pearson (chart, totals over A, B, C): pred [2+1, 2, 0] = [3, 2, 0], gt [3+1, 0, 2] = [4, 0, 2]
      (A: data 2 + style 1 predicted, data 3 + text 1 annotated; B: style 2; C: structure 2).
    """
    from pipeline.metrics.critic import OfficialMatcher, score_item_official, summarize_official

    answers = {
        "A": '{"matches": [{"pred_id": 0, "gt_id": 0, "match_level": "yes"}, '
             '{"pred_id": 1, "gt_id": 1, "match_level": "partial"}], "unmatched_pred": [], "unmatched_gt": []}',
        "D": "sorry, I cannot",
        "E": 'Here: {"matches": [{"pred_id": 0, "gt_id": 0, "match_level": "yes"}], "unmatched_gt": [1]}',
    }
    asked = []

    def align(task, predicted, annotated):
        key = {"bar 2 too tall": "A", "x": "D", "cell 3": "E"}[predicted[0].description]
        asked.append(key)
        return answers[key]

    matcher = OfficialMatcher(align)
    items = [
        ("A", "chart", [d("data_error", 2, "", "bar 2 too tall"), d("style_error", 1, "", "red bars"),
                        d("text_x", 3, "", "??")],
         [{"type": "data_error", "severity": 3, "description": "bar 2 too high"},
          {"type": "text_error", "severity": 1, "description": "title typo"}]),
        ("B", "chart", {"errors": [d("style", 2, "", "line dashed")]}, []),
        ("C", "chart", [], [{"type": "structure_error", "severity": 2, "description": "legend missing"}]),
        ("D", "chart", [d("data", 1, "", "x")], [d("data", 1, "", "y")]),
        ("E", "table", [{"type": "numeric_error", "severity": 2, "description": "cell 3"}],
         [{"type": "numeric_error", "severity": 2, "description": "cell 3"},
          {"type": "layout_error", "severity": 3, "description": "row missing"}]),
    ]
    results, dropped = [], []
    for item_id, task, pred, ann in items:
        try:
            results.append(score_item_official(item_id, task, pred, ann, matcher))
        except RecordError as e:
            dropped.append((item_id, str(e)))
    assert asked == ["A", "D", "E"]  # B and C need no judge: nothing can match
    assert [i for i, _ in dropped] == ["D"] and matcher.judge_failures == 1
    assert results[0].dropped_predicted == 1  # the unknown "text_x" category
    s = summarize_official(results)
    assert s["chart"]["items"] == 3 and (s["chart"]["fp"], s["chart"]["fn"]) == (1, 1)
    assert s["chart"]["f1_hard"] == pytest.approx(0.5) and s["chart"]["f1_soft"] == pytest.approx(0.6)
    assert s["overall"]["f1_hard"] == pytest.approx(4 / 7) and s["overall"]["f1_soft"] == pytest.approx(5 / 8)
    t = s["chart"]["by_type"]
    assert t["data"]["f1_hard"] == 1.0 and t["style"]["f1_hard"] == 0.0
    assert t["style"]["f1_soft"] == pytest.approx(0.5) and t["text"]["f1_hard"] == 1.0
    assert s["chart"]["severity_pearson"] == pytest.approx(pearson([3, 2, 0], [4, 0, 2]))
    assert s["chart"]["severity_pearson_by_type"]["data"] == pytest.approx(pearson([2, 0, 0], [3, 0, 0]))
    assert s["table"]["f1_hard"] == pytest.approx(2 / 3)  # tp 1, fn 1: P 1, R 1/2


def test_official_cleaning_of_judge_answers():
    from pipeline.metrics.critic import JudgeFailed, parse_alignment

    # Invalid levels, non-integer / out-of-range ids and repeats are dropped; missing unmatched lists are
    # completed from the matches.
    a = parse_alignment('```json\n{"matches": [{"pred_id": 0, "gt_id": 1, "match_level": "yes"}, '
                        '{"pred_id": 0, "gt_id": 0, "match_level": "yes"}, {"pred_id": 1, "gt_id": 0, '
                        '"match_level": "no"}, {"pred_id": "1", "gt_id": 0, "match_level": "partial"}, '
                        '{"pred_id": 9, "gt_id": 0, "match_level": "yes"}]}\n```', 2, 2)
    assert a.matches == [Match(0, 1, "full")] and a.unmatched_predicted == [1] and a.unmatched_annotated == [0]
    for bad in ("", "no json", '{"matches": [], "unmatched_pred": [5]}', '{"unmatched_gt": ["a"]}'):
        with pytest.raises(JudgeFailed):
            parse_alignment(bad, 2, 2)


def test_official_defaults_of_the_evaluate_cli_config():
    from pipeline.evaluate.benchmark import make_matcher
    from pipeline.evaluate.config import CriticEvalConfig
    from pipeline.metrics.critic import OfficialMatcher

    cfg = CriticEvalConfig()
    assert (cfg.counting, cfg.matcher.kind, cfg.category_filter) == ("official", "official", "normalized")
    m = make_matcher(cfg)
    assert isinstance(m, OfficialMatcher) and m.stats()["judge"] == "deterministic"  # no judge: CPU fallback
    # The fallback aligns across categories (no same-category rule) and speaks the judge's JSON.
    pred = parse_discrepancies([d("style", 2, "bar 2", "bar 2 value is too high")], "chart")
    ann = parse_discrepancies([d("data", 2, "bar 2", "bar 2 value is too high")], "chart")
    assert m("chart", pred, ann).matches == [Match(0, 0, "full")]
    with pytest.raises(ValueError, match="counting=official"):
        CriticEvalConfig.model_validate({"counting": "official", "matcher": {"kind": "deterministic"}})
    strict = CriticEvalConfig.model_validate({"matcher": {"kind": "deterministic"}})
    assert strict.counting == "strict" and isinstance(make_matcher(strict), SimilarityMatcher)


def test_exact_category_filter_drops_unsuffixed_names():
    from pipeline.metrics.critic import OfficialMatcher, deterministic_align, score_item_official

    m = OfficialMatcher(deterministic_align())
    ours = {"errors": [d("data", 2, "bar", "bar too high")]}
    released = {"errors": [d("data_error", 2, "bar", "bar too high")]}
    ann = [{"type": "data_error", "severity": 2, "description": "bar too high"}]
    assert score_item_official("a", "chart", ours, ann, m, exact_filter=True).predicted == []
    assert len(score_item_official("a", "chart", released, ann, m, exact_filter=True).predicted) == 1
    assert len(score_item_official("a", "chart", ours, ann, m).predicted) == 1  # normalized (default)
