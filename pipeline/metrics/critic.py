"""How well a critic finds discrepancies: VC-RewardBench's metrics.

For each item the predicted discrepancies are matched one-to-one to the annotated ones (same category
required), each match being full or partial. Then, per task and overall:
  * F1 hard — only full matches count;
  * F1 soft — a partial match counts 0.5;
  * Pearson correlation of the per-item severity totals (predicted vs annotated).
Counts are pooled over items (micro average), as the official evaluation script does; an item, task or set
where both sides list nothing scores F1 = 1.0 (the critic was right that nothing is wrong).

Counting convention. We use precision = tp / #predicted and recall = tp / #annotated, so a partial match
costs in the hard F1 as a miss on both sides. The official script instead takes fp/fn as the *unmatched*
counts, so a partial match is neither a hit nor a miss in its hard F1; `counting="official"` reproduces that.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Optional, Protocol

import numpy as np

from pipeline.sample import CATEGORIES, Discrepancy

Counting = Literal["strict", "official"]
MatchLevel = Literal["full", "partial"]


class RecordError(ValueError):
    """A malformed benchmark record or critic output; the message says which field."""


def normalize_category(raw: Any, task: str) -> str:
    """'Structure_Error', 'structure error', 'structure' → 'structure'; unknown → 'invalid:<raw>'."""
    name = re.sub(r"[\s\-]+", "_", str(raw or "").strip().lower())
    name = re.sub(r"_?errors?$", "", name)
    return name if name in CATEGORIES[task] else f"invalid:{raw}"


def parse_discrepancy(raw: Any, task: str) -> Discrepancy:
    """One error object as the RM or an annotator writes it (`category` or `type` key, severity 1-3)."""
    if not isinstance(raw, dict):
        raise RecordError(f"discrepancy must be an object, got {type(raw).__name__}: {raw!r:.80}")
    category = normalize_category(raw.get("category", raw.get("type")), task)
    try:
        severity = int(float(raw.get("severity", 0)))
    except (TypeError, ValueError):
        severity = 0
    severity = severity if 1 <= severity <= 3 else 0
    return Discrepancy(category, severity, str(raw.get("location") or ""), str(raw.get("description") or ""))


def parse_discrepancies(raw: Any, task: str) -> list[Discrepancy]:
    """A list of error objects, or a critic's whole JSON answer ({"errors": [...], counts...})."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = raw.get("errors", [])
    if not isinstance(raw, list):
        raise RecordError(f"discrepancies must be a list, got {type(raw).__name__}")
    return [parse_discrepancy(e, task) for e in raw]


# ---------------------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    predicted: int  # index into the predicted list
    annotated: int  # index into the annotated list
    level: MatchLevel


class Matcher(Protocol):
    def __call__(self, task: str, predicted: list[Discrepancy], annotated: list[Discrepancy]) -> list[Match]: ...


_STOPWORDS = frozenset(
    "a an the of in on at to for by with and or is are was be it its this that should instead than from".split()
)


def _words(d: Discrepancy) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", f"{d.location} {d.description}".lower())) - _STOPWORDS


@dataclass
class SimilarityMatcher:
    """Deterministic matcher: same category, then location+description text similarity.

    Similarity is the Dice overlap of the content words of location+description, in [0, 1]. Word overlap
    rather than character fuzz: character ratios score unrelated English sentences around 0.35. Pairs at or above
    `full_threshold` are full matches, at or above `partial_threshold` partial. The one-to-one assignment
    maximises total similarity (Hungarian algorithm), so a greedy early pick cannot steal a better pair.
    An empty description on either side still matches on category alone, as a partial match.
    """

    full_threshold: float = 0.5
    partial_threshold: float = 0.25
    same_category: bool = True  # False: as the official matcher, categories need not agree

    def similarity(self, a: Discrepancy, b: Discrepancy) -> float:
        if not a.valid or not b.valid or (self.same_category and a.category != b.category):
            return 0.0
        wa, wb = _words(a), _words(b)
        if not wa or not wb:
            return self.partial_threshold
        return 2 * len(wa & wb) / (len(wa) + len(wb))

    def __call__(self, task: str, predicted: list[Discrepancy], annotated: list[Discrepancy]) -> list[Match]:
        if not predicted or not annotated:
            return []
        sim = np.array([[self.similarity(p, a) for a in annotated] for p in predicted])
        return assign(sim, self.full_threshold, self.partial_threshold)


def assign(scores: np.ndarray, full_at: float, partial_at: float) -> list[Match]:
    """One-to-one matching maximising the summed pair scores (Hungarian algorithm); an assigned pair scoring
    ≥ full_at is a full match, ≥ partial_at a partial one, below that no match."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(scores, maximize=True)
    matches = []
    for i, j in zip(rows, cols):
        s = scores[i, j]
        if s >= full_at:
            matches.append(Match(int(i), int(j), "full"))
        elif s >= partial_at:
            matches.append(Match(int(i), int(j), "partial"))
    return sorted(matches, key=lambda m: m.predicted)


JUDGE_PROMPT = """Two short reports describe visual differences between a reference {task} image and a \
rendering of code that tried to reproduce it. Report X was written by a critic, report Y by a person.

X: {predicted}
Y: {annotated}

Do X and Y describe the same discrepancy (the same element, cell or region, and the same kind of mistake)? \
Answer "yes" if they do, "partial" if X points at the same problem but is vaguer or gets a detail wrong, \
"no" otherwise. Answer with one JSON object: {{"verdict": "yes" | "partial" | "no"}}"""

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "partial", "no"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}
VERDICT_SCORES = {"yes": 1.0, "partial": 0.5, "no": 0.0}


def parse_verdict(text: Optional[str]) -> Optional[str]:
    """'yes' / 'partial' / 'no' from the judge's JSON answer; None if the answer is not that JSON."""
    if not text:
        return None
    try:
        verdict = json.loads(text).get("verdict")
    except (json.JSONDecodeError, AttributeError):
        return None
    return verdict if verdict in VERDICT_SCORES else None


# The judge: a batch of chat prompts → one answer text per prompt (None: no answer at all).
JudgeFn = Callable[[list[str]], list[Optional[str]]]


@dataclass
class LLMJudgeMatcher:
    """Pairwise LLM-judge matcher: the judge says for every same-category (predicted, annotated) pair whether
    they describe the same discrepancy (yes / partial / no, a JSON answer under `VERDICT_SCHEMA`); the
    verdicts (1 / 0.5 / 0) then go through the same one-to-one assignment as the deterministic matcher.

    A pair whose answer is still not valid JSON after `max_attempts` asks counts as a judge failure and as
    "no"; failures are counted in `judge_failures`, so a flaky judge shows in the results, never crashes them.
    """

    judge: JudgeFn
    max_attempts: int = 2
    judge_pairs: int = 0  # pairs asked about
    judge_failures: int = 0  # pairs without a valid verdict after all attempts (scored as "no")
    judge_retries: int = 0  # extra asks spent on invalid answers
    verdicts: dict[str, int] = field(default_factory=lambda: {"yes": 0, "partial": 0, "no": 0})

    @staticmethod
    def prompt(task: str, predicted: Discrepancy, annotated: Discrepancy) -> str:
        def describe(d: Discrepancy) -> str:
            return json.dumps({"category": d.category, "severity": d.severity, "location": d.location,
                               "description": d.description}, ensure_ascii=False)

        return JUDGE_PROMPT.format(task=task, predicted=describe(predicted), annotated=describe(annotated))

    def __call__(self, task: str, predicted: list[Discrepancy], annotated: list[Discrepancy]) -> list[Match]:
        if not predicted or not annotated:
            return []
        pairs = [(i, j) for i, p in enumerate(predicted) for j, a in enumerate(annotated)
                 if p.valid and p.category == a.category]
        if not pairs:
            return []
        self.judge_pairs += len(pairs)
        prompts = [self.prompt(task, predicted[i], annotated[j]) for i, j in pairs]
        verdicts: list[Optional[str]] = [None] * len(pairs)
        pending = list(range(len(pairs)))
        for attempt in range(self.max_attempts):
            if not pending:
                break
            if attempt:
                self.judge_retries += len(pending)
            answers = self.judge([prompts[k] for k in pending])
            if len(answers) != len(pending):  # a judge bug: treat the whole ask as unanswered
                answers = [None] * len(pending)
            for k, answer in zip(pending, answers):
                verdicts[k] = parse_verdict(answer)
            pending = [k for k in pending if verdicts[k] is None]
        self.judge_failures += len(pending)
        scores = np.zeros((len(predicted), len(annotated)))
        for (i, j), verdict in zip(pairs, verdicts):
            verdict = verdict or "no"
            self.verdicts[verdict] += 1
            scores[i, j] = VERDICT_SCORES[verdict]
        return assign(scores, 1.0, 0.5)

    def stats(self) -> dict[str, Any]:
        return {"judge_pairs": self.judge_pairs, "judge_failures": self.judge_failures,
                "judge_retries": self.judge_retries, "verdicts": dict(self.verdicts)}


# ---------------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Counts:
    n_predicted: int = 0
    n_annotated: int = 0
    full: int = 0
    partial: int = 0

    def __iadd__(self, other: "Counts") -> "Counts":
        self.n_predicted += other.n_predicted
        self.n_annotated += other.n_annotated
        self.full += other.full
        self.partial += other.partial
        return self

    def f1(self, soft: bool, counting: Counting = "strict") -> float:
        if self.n_predicted == 0 and self.n_annotated == 0:
            return 1.0
        tp = self.full + (0.5 * self.partial if soft else 0.0)
        if counting == "strict":
            pred_total, ann_total = self.n_predicted, self.n_annotated
        else:  # official: fp/fn are the unmatched items, so partial matches leave both denominators
            matched = self.full + self.partial
            pred_total = tp + (self.n_predicted - matched)
            ann_total = tp + (self.n_annotated - matched)
        precision = tp / pred_total if pred_total else 0.0
        recall = tp / ann_total if ann_total else 0.0
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson r; NaN when fewer than two items or either side is constant (undefined, not zero)."""
    if len(xs) != len(ys) or len(xs) < 2:
        return float("nan")
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def auroc(positive: Iterable[float], negative: Iterable[float]) -> float:
    """The area under the ROC curve of a score that should be higher for `positive` items than for `negative`
    ones: P(score of a random positive > that of a random negative), a tie counting ½ — the Mann-Whitney U of
    the positives over n_pos · n_neg (scipy's, mid-ranks for ties). 1.0: every positive above every negative;
    0.5: no separation (e.g. a constant score); 0.0: reversed. NaN when either side is empty (undefined)."""
    pos, neg = np.asarray(list(positive), float), np.asarray(list(negative), float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    from scipy.stats import mannwhitneyu  # heavy: scipy.stats, only this metric needs it

    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic / (pos.size * neg.size))


@dataclass
class ItemResult:
    id: str
    task: str
    counts: Counts
    matches: list[Match]
    severity_predicted: int
    severity_annotated: int
    invalid_predicted: int  # predicted items whose category is not in the task's set (unmatched, so FP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "task": self.task, "n_predicted": self.counts.n_predicted,
            "n_annotated": self.counts.n_annotated, "full": self.counts.full, "partial": self.counts.partial,
            "f1_hard": self.counts.f1(soft=False), "f1_soft": self.counts.f1(soft=True),
            "severity_predicted": self.severity_predicted, "severity_annotated": self.severity_annotated,
            "invalid_predicted": self.invalid_predicted,
            "matches": [[m.predicted, m.annotated, m.level] for m in self.matches],
        }


def score_item(
    item_id: str, task: str, predicted: list[Discrepancy], annotated: list[Discrepancy], matcher: Matcher
) -> ItemResult:
    if task not in CATEGORIES:
        raise RecordError(f"item {item_id}: unknown task {task!r}")
    bad = [d.category for d in annotated if not d.valid]
    if bad:  # the ground truth must use the paper's categories, or the item cannot be scored
        raise RecordError(f"item {item_id}: annotated categories outside the {task} set: {bad}")
    matches = matcher(task, predicted, annotated)
    counts = Counts(
        n_predicted=len(predicted),
        n_annotated=len(annotated),
        full=sum(m.level == "full" for m in matches),
        partial=sum(m.level == "partial" for m in matches),
    )
    return ItemResult(
        id=item_id,
        task=task,
        counts=counts,
        matches=matches,
        severity_predicted=sum(d.severity for d in predicted if d.valid),
        severity_annotated=sum(d.severity for d in annotated),
        invalid_predicted=sum(not d.valid for d in predicted),
    )


def summarize(results: Iterable[ItemResult], counting: Counting = "strict") -> dict[str, dict[str, float]]:
    """Per task and overall: F1 hard/soft (pooled counts), Pearson of severity totals, item counts."""
    results = list(results)
    groups: dict[str, list[ItemResult]] = {}
    for r in results:
        groups.setdefault(r.task, []).append(r)
    summary = {}
    for name, rows in [*sorted(groups.items()), ("overall", results)]:
        pooled = Counts()
        for r in rows:
            pooled += r.counts
        summary[name] = {
            "items": len(rows),
            "f1_hard": pooled.f1(soft=False, counting=counting),
            "f1_soft": pooled.f1(soft=True, counting=counting),
            "severity_pearson": pearson(
                [r.severity_predicted for r in rows], [r.severity_annotated for r in rows]
            ),
            "n_predicted": pooled.n_predicted,
            "n_annotated": pooled.n_annotated,
            "full_matches": pooled.full,
            "partial_matches": pooled.partial,
            "invalid_predicted": sum(r.invalid_predicted for r in rows),
        }
    return summary


def evaluate_predictions(
    items: Iterable[tuple[str, str, Any, Any]],
    matcher: Optional[Matcher] = None,
    counting: Counting = "strict",
) -> tuple[dict[str, dict[str, float]], list[ItemResult]]:
    """Score (id, task, predicted_raw, annotated_raw) tuples; raw = error list or the critic's JSON."""
    matcher = matcher or SimilarityMatcher()
    results = [
        score_item(item_id, task, parse_discrepancies(pred, task), parse_discrepancies(ann, task), matcher)
        for item_id, task, pred, ann in items
    ]
    return summarize(results, counting), results


# ---------------------------------------------------------------------------------------------------------
# The official VC-RewardBench counting (InternLM/Visual-ERM evaluation/evaluation.py), reproduced
# ---------------------------------------------------------------------------------------------------------
# evaluate_one_item_with_llm: predicted and annotated errors whose category is not one of the task's are
# dropped (CATEGORY_ERROR_TYPES filter); ONE judge call per item aligns the two whole lists (no
# same-category requirement: the type check is commented out there); matches are cleaned (yes / partial,
# integer ids in range, one-to-one, first come); FP / FN are the judge's `unmatched_pred` / `unmatched_gt`
# when it gives them (else everything not matched); a partial match is 0.5 of a soft TP; an item whose judge
# call or answer fails is dropped (evaluate_dataset collects it in `failed_items`). Counts are pooled over
# items; F1 hard = 1.0 when tp = fp = fn = 0 (f1_score), F1 soft = 0.0 then (safe_div); severity Pearson per
# task, per error type and overall.
#
# Their filter compares exact spellings ("structure_error"); `category_filter: normalized` (our default)
# accepts any spelling `normalize_category` reads ("structure", "Structure_Error"), so our own sets (bare
# labels) can be scored; `exact` applies their literal filter (an answer in our format then keeps nothing).

class JudgeFailed(RecordError):
    """The item's judge call or answer failed: the official evaluation drops such items."""


@dataclass
class ItemAlignment:
    matches: list[Match]
    unmatched_predicted: list[int]
    unmatched_annotated: list[int]


ALIGN_PROMPT = """You compare two lists of discrepancies found between a reference {task} image and a rendering of \
code that tried to reproduce it. PRED was written by a critic, GT by annotators. Decide which PRED and GT \
entries describe the same concrete error: the same element, cell, series or region, and the same or nearly \
the same mistake.

Rules:
1) Categories may differ; judge by what the descriptions point at.
2) match_level "yes": the same error. "partial": PRED points at the same error but is vaguer or gets a \
detail wrong. Otherwise do not match them.
3) One-to-one: each PRED matches at most one GT, each GT at most one PRED.
4) When unsure, do not match: a missed match is better than a wrong one.

PRED:
{predicted}

GT:
{annotated}

Answer with one JSON object and nothing else:
{{"matches": [{{"pred_id": <int>, "gt_id": <int>, "match_level": "yes" | "partial"}}], \
"unmatched_pred": [<int>, ...], "unmatched_gt": [<int>, ...]}}"""


def align_listing(items: list[Discrepancy], key: str) -> list[dict[str, Any]]:
    """The lists the judge sees (evaluation.py: normalize_err — type, description, severity; no location)."""
    return [{key: i, "type": d.category, "description": d.description, "severity": d.severity}
            for i, d in enumerate(items)]


def align_prompt(task: str, predicted: list[Discrepancy], annotated: list[Discrepancy],
                 template: str = ALIGN_PROMPT) -> str:
    return template.format(task=task,
                           predicted=json.dumps(align_listing(predicted, "pred_id"), ensure_ascii=False, indent=2),
                           annotated=json.dumps(align_listing(annotated, "gt_id"), ensure_ascii=False, indent=2))


def align_schema(n_predicted: int, n_annotated: int) -> dict[str, Any]:
    """The judge answer's JSON Schema (ids bounded by the lists), for constrained decoding."""
    def ids(n):
        return {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": max(0, n - 1)},
                "maxItems": n}

    match = {"type": "object", "properties": {
        "pred_id": {"type": "integer", "minimum": 0, "maximum": max(0, n_predicted - 1)},
        "gt_id": {"type": "integer", "minimum": 0, "maximum": max(0, n_annotated - 1)},
        "match_level": {"type": "string", "enum": ["yes", "partial"]}},
        "required": ["pred_id", "gt_id", "match_level"], "additionalProperties": False}
    return {"type": "object", "properties": {
        "matches": {"type": "array", "items": match, "maxItems": min(n_predicted, n_annotated)},
        "unmatched_pred": ids(n_predicted), "unmatched_gt": ids(n_annotated)},
        "required": ["matches", "unmatched_pred", "unmatched_gt"], "additionalProperties": False}


def parse_alignment(raw: Optional[str], n_predicted: int, n_annotated: int) -> ItemAlignment:
    """The official post-processing of one judge answer (evaluation.py: parse_llm_output and the cleaning in
    evaluate_one_item_with_llm). Raises JudgeFailed where the official code raises (not JSON; unmatched ids
    it would index out of range or with a non-integer)."""
    if not raw or not raw.strip():
        raise JudgeFailed("judge gave no answer")
    text = raw.strip()
    first, last = text.find("{"), text.rfind("}")
    if first >= 0 and last > first:
        text = text[first:last + 1]
    try:
        out = json.loads(text)
        if not isinstance(out, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise JudgeFailed(f"judge answer is not a JSON object: {e}") from None
    used_p, used_a, matches = set(), set(), []
    for m in out.get("matches") or []:
        if not isinstance(m, dict):
            continue
        pid, gid, level = m.get("pred_id"), m.get("gt_id"), m.get("match_level", "no")
        if level not in ("yes", "partial") or not isinstance(pid, int) or not isinstance(gid, int):
            continue
        if not (0 <= pid < n_predicted and 0 <= gid < n_annotated) or pid in used_p or gid in used_a:
            continue
        used_p.add(pid)
        used_a.add(gid)
        matches.append(Match(pid, gid, "full" if level == "yes" else "partial"))

    def unmatched(key: str, n: int, used: set[int]) -> list[int]:
        given = out.get(key) or []
        if not given:  # "if the LLM gave none, complete them ourselves"
            return sorted(set(range(n)) - used)
        if not isinstance(given, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n
                                              for i in given):
            raise JudgeFailed(f"judge's {key} holds ids outside the list: {given!r:.80}")
        return sorted(set(given))

    return ItemAlignment(sorted(matches, key=lambda m: m.predicted), unmatched("unmatched_pred", n_predicted, used_p),
                         unmatched("unmatched_gt", n_annotated, used_a))


# A judge for the official matcher: (task, predicted, annotated) → its raw JSON answer (None: no answer).
AlignFn = Callable[[str, list[Discrepancy], list[Discrepancy]], Optional[str]]


def deterministic_align(full_threshold: float = 0.5, partial_threshold: float = 0.25) -> AlignFn:
    """The CPU fallback judge: word-overlap similarity without a category requirement, one-to-one by the
    Hungarian algorithm, written as the judge's JSON answer (so the official post-processing runs on it)."""
    matcher = SimilarityMatcher(full_threshold, partial_threshold, same_category=False)

    def align(task, predicted, annotated):
        found = matcher(task, predicted, annotated)
        return json.dumps({
            "matches": [{"pred_id": m.predicted, "gt_id": m.annotated,
                         "match_level": "yes" if m.level == "full" else "partial"} for m in found],
            "unmatched_pred": sorted(set(range(len(predicted))) - {m.predicted for m in found}),
            "unmatched_gt": sorted(set(range(len(annotated))) - {m.annotated for m in found})})

    align.kind = "deterministic"
    return align


@dataclass
class OfficialMatcher:
    """The official matcher: one judge answer per item aligning the two lists. An item with no predicted or
    no annotated error needs no judge (nothing can match). Judge failures raise JudgeFailed (item dropped)."""

    align: AlignFn
    judge_items: int = 0
    judge_failures: int = 0

    def __call__(self, task: str, predicted: list[Discrepancy], annotated: list[Discrepancy]) -> ItemAlignment:
        if not predicted or not annotated:
            return ItemAlignment([], list(range(len(predicted))), list(range(len(annotated))))
        self.judge_items += 1
        try:
            return parse_alignment(self.align(task, predicted, annotated), len(predicted), len(annotated))
        except JudgeFailed:
            self.judge_failures += 1
            raise

    def stats(self) -> dict[str, Any]:
        return {"judge": getattr(self.align, "kind", "llm"), "judge_items": self.judge_items,
                "judge_failures": self.judge_failures}


def _f1_official(tp: float, fp: int, fn: int, soft: bool) -> float:
    if not soft and tp == 0 and fp == 0 and fn == 0:  # f1_score: nothing to find and nothing found
        return 1.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class OfficialItem:
    id: str
    task: str
    predicted: list[Discrepancy]  # after the category filter
    annotated: list[Discrepancy]
    alignment: ItemAlignment
    dropped_predicted: int  # errors the category filter removed
    dropped_annotated: int

    def tallies(self, category: Optional[str] = None) -> tuple[int, float, int, int]:
        """(tp_hard, tp_soft, fp, fn), over all errors or those of one category (TP by the predicted one's)."""
        def of(d):
            return category is None or d.category == category

        ms = [m for m in self.alignment.matches if of(self.predicted[m.predicted])]
        hard = sum(m.level == "full" for m in ms)
        soft = hard + 0.5 * sum(m.level == "partial" for m in ms)
        fp = sum(of(self.predicted[i]) for i in self.alignment.unmatched_predicted)
        fn = sum(of(self.annotated[i]) for i in self.alignment.unmatched_annotated)
        return hard, soft, fp, fn

    def severity(self, side: str, category: Optional[str] = None) -> float:
        items = self.predicted if side == "predicted" else self.annotated
        return float(sum(d.severity for d in items if category is None or d.category == category))

    def to_dict(self) -> dict[str, Any]:
        hard, soft, fp, fn = self.tallies()
        return {"id": self.id, "task": self.task, "n_predicted": len(self.predicted),
                "n_annotated": len(self.annotated), "tp_hard": hard, "tp_soft": soft, "fp": fp, "fn": fn,
                "f1_hard": _f1_official(hard, fp, fn, False), "f1_soft": _f1_official(soft, fp, fn, True),
                "severity_predicted": self.severity("predicted"), "severity_annotated": self.severity("annotated"),
                "dropped_predicted": self.dropped_predicted, "dropped_annotated": self.dropped_annotated,
                "matches": [[m.predicted, m.annotated, m.level] for m in self.alignment.matches]}


def official_filter(raw: Any, task: str, exact: bool) -> tuple[list[Discrepancy], int]:
    """(kept discrepancies, dropped count): errors of a category outside the task's set are dropped. `exact`:
    the official literal check, `(e.get("type") or e.get("category")) in ["structure_error", ...]`."""
    if raw is None:
        return [], 0
    if isinstance(raw, dict):
        raw = raw.get("errors", []) or []
    if not isinstance(raw, list):
        raise RecordError(f"discrepancies must be a list, got {type(raw).__name__}")
    kept, dropped = [], 0
    allowed = {f"{c}_error" for c in CATEGORIES[task]}
    for e in raw:
        d = parse_discrepancy(e, task)
        literal = e.get("type") or e.get("category")
        if not d.valid or (exact and literal not in allowed):
            dropped += 1
            continue
        kept.append(d)
    return kept, dropped


def score_item_official(item_id: str, task: str, predicted_raw: Any, annotated_raw: Any, matcher: OfficialMatcher,
                        exact_filter: bool = False) -> OfficialItem:
    if task not in CATEGORIES:
        raise RecordError(f"item {item_id}: unknown task {task!r}")
    predicted, dp = official_filter(predicted_raw, task, exact_filter)
    annotated, da = official_filter(annotated_raw, task, exact_filter)
    return OfficialItem(item_id, task, predicted, annotated, matcher(task, predicted, annotated), dp, da)


def summarize_official(results: Iterable[OfficialItem]) -> dict[str, dict[str, Any]]:
    """Per task and overall, pooled as evaluation.py's aggregate_metrics and severity correlation: F1 hard /
    soft, the same per error type, severity Pearson of the totals and per error type."""
    results = list(results)
    groups: dict[str, list[OfficialItem]] = {}
    for r in results:
        groups.setdefault(r.task, []).append(r)

    def pooled(rows, category=None):
        hard = soft = 0.0
        fp = fn = 0
        for r in rows:
            h, s_, p, n = r.tallies(category)
            hard, soft, fp, fn = hard + h, soft + s_, fp + p, fn + n
        return hard, soft, fp, fn

    summary: dict[str, dict[str, Any]] = {}
    for name, rows in [*sorted(groups.items()), ("overall", results)]:
        hard, soft, fp, fn = pooled(rows)
        cats = CATEGORIES[name] if name in CATEGORIES else sorted({c for cs in CATEGORIES.values() for c in cs})
        by_type, pearson_by_type = {}, {}
        for c in cats:
            relevant = [r for r in rows if c in CATEGORIES[r.task]]
            if not relevant:
                continue
            h, s_, p, n = pooled(relevant, c)
            by_type[c] = {"tp_hard": h, "tp_soft": s_, "fp": p, "fn": n, "f1_hard": _f1_official(h, p, n, False),
                          "f1_soft": _f1_official(s_, p, n, True)}
            if name in CATEGORIES:  # the official script correlates per type within a task only
                pearson_by_type[c] = pearson([r.severity("predicted", c) for r in rows],
                                             [r.severity("annotated", c) for r in rows])
        summary[name] = {
            "items": len(rows),
            "f1_hard": _f1_official(hard, fp, fn, False),
            "f1_soft": _f1_official(soft, fp, fn, True),
            "severity_pearson": pearson([r.severity("predicted") for r in rows],
                                        [r.severity("annotated") for r in rows]),
            "severity_pearson_by_type": pearson_by_type,
            "n_predicted": sum(len(r.predicted) for r in rows),
            "n_annotated": sum(len(r.annotated) for r in rows),
            "full_matches": int(hard),
            "partial_matches": sum(m.level == "partial" for r in rows for m in r.alignment.matches),
            "fp": fp, "fn": fn,
            "invalid_predicted": sum(r.dropped_predicted for r in rows),
            "dropped_annotated": sum(r.dropped_annotated for r in rows),
            "by_type": by_type,
        }
    return summary
