"""Non-learned critics: the floor a trained Visual-ERM critic has to clear on the same held-out sets.

Each critic has `fit(examples)` (training `CriticExample`s of `pipeline/critic/training/dataset.py`; pure statistics of
that set, nothing learned by gradient) and `judge(task, reference_rgb, candidate_rgb, reference_code=None,
candidate_code=None) -> list[dict]` returning errors in the critic's answer shape (category, severity,
location, description). A critic that cannot judge an item raises `CriticUnusable`: evaluation counts that
as an unusable answer (scored "found nothing"), the way an invalid model answer is counted.

  TrivialCritic     always the same one error per task: the most frequent training category, severity 2, and
                    that category's most frequent (location, description). The text matters: the evaluation
                    matcher (`pipeline/metrics/critic.py`) needs word overlap of location + description for
                    a full match, so a constant answer with empty text would be a strawman that can at best
                    match partially; this one is the best constant answer the training labels suggest.
  PixelCritic       looks only at pixels: gray SSIM at a common size decides "same" (answer []) or
                    "different" (one error at the 3×3 grid cell of largest change, severity by how large the
                    change is); the threshold and severity cut-offs are fitted per task on the training set.
  StructuralCritic  the structural teacher (`pipeline/critic/structural.structural_diff`) used as a critic:
                    it diffs the two programs and never looks at the images, so it needs both codes. It is
                    the teacher that labels `natural` rows, so on those rows it scores its own labels.

Ties in every "most frequent" statistic are broken deterministically (documented where they are made), so
a fitted baseline gives the same answers on every machine and every run.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from pipeline.critic.structural import StructuralDiffError, structural_diff
from pipeline.sample import CATEGORIES

REGION_ROWS = ("top", "middle", "bottom")
REGION_COLS = ("left", "center", "right")


class CriticUnusable(ValueError):
    """The critic has no answer for this item (e.g. the structural critic without both programs)."""


class Critic(Protocol):
    name: str
    uses_images: bool  # False: judge() ignores the images, so a caller need not decode them

    def fit(self, examples: Sequence[Any]) -> "Critic": ...

    def judge(self, task: str, reference_rgb: Optional[np.ndarray], candidate_rgb: Optional[np.ndarray],
              reference_code: Optional[str] = None, candidate_code: Optional[str] = None) -> list[dict]: ...


def _error(category: str, severity: int, location: str, description: str) -> dict[str, Any]:
    return {"category": category, "severity": int(severity), "location": location, "description": description}


def _most_common(counts: Counter, order: Sequence = ()) -> Any:
    """The key with the highest count; a tie goes to the key that comes first in `order` (the task's schema
    category order), then to the smallest key — never to dict insertion order, which depends on the data's
    row order."""
    rank = {k: i for i, k in enumerate(order)}
    return min(counts, key=lambda k: (-counts[k], rank.get(k, len(rank)), k))


class _LabelStats:
    """Per task: how often each category is labelled, and per category how often each (location,
    description) and each description occurs, over every error of every training example."""

    def __init__(self, examples: Iterable[Any]):
        self.categories: dict[str, Counter] = {t: Counter() for t in CATEGORIES}
        self.texts: dict[tuple[str, str], Counter] = {}
        self.descriptions: dict[tuple[str, str], Counter] = {}
        for ex in examples:
            for e in ex.errors:
                key = (ex.task, e["category"])
                self.categories[ex.task][e["category"]] += 1
                location, description = e.get("location") or "", e.get("description") or ""
                self.texts.setdefault(key, Counter())[(location, description)] += 1
                self.descriptions.setdefault(key, Counter())[description] += 1

    def top_category(self, task: str, counts: Optional[Counter] = None) -> Optional[str]:
        counts = self.categories[task] if counts is None else counts
        return _most_common(counts, CATEGORIES[task]) if counts else None

    def top_text(self, task: str, category: str) -> tuple[str, str]:
        counts = self.texts.get((task, category))
        return _most_common(counts) if counts else ("", "")

    def top_description(self, task: str, category: str) -> str:
        counts = self.descriptions.get((task, category))
        return _most_common(counts) if counts else ""


class TrivialCritic:
    """The best constant answer: per task one error with the task's most frequent training category,
    severity 2 (the middle of the scale), and the most frequent (location, description) pair among that
    category's training labels (ties: the lexicographically smallest pair). A task without any training
    label gets [] — the training set then says nothing is ever wrong there, so that is its constant."""

    name = "trivial"
    uses_images = False

    def __init__(self):
        self.answers: dict[str, list[dict]] = {t: [] for t in CATEGORIES}

    def fit(self, examples: Sequence[Any]) -> "TrivialCritic":
        stats = _LabelStats(examples)
        for task in CATEGORIES:
            category = stats.top_category(task)
            if category is None:
                self.answers[task] = []
                continue
            location, description = stats.top_text(task, category)
            self.answers[task] = [_error(category, 2, location, description)]
        return self

    def judge(self, task, reference_rgb=None, candidate_rgb=None, reference_code=None, candidate_code=None):
        return [dict(e) for e in self.answers[task]]


def _gray(image: np.ndarray, side: int) -> np.ndarray:
    """Float gray image in [0, 1] at side × side: both images of a pair are brought to the same grid (aspect
    ignored, the same way for both), so a harmless change of resolution compares equal."""
    im = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L").resize((side, side), Image.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255.0


def region_name(row: int, col: int) -> str:
    """'top left' … 'bottom right'; the middle cell is plain 'center'."""
    if (row, col) == (1, 1):
        return "center"
    return f"{REGION_ROWS[row]} {REGION_COLS[col]}"


class PixelCritic:
    """A critic that only compares pixels.

    Both images go to gray at `side` × `side`; SSIM (skimage, data range 1) ≥ the task's threshold → []
    (the same), else one error:
      location     the 3×3 grid cell with the largest summed absolute gray difference ('top left', 'center');
      category     the most frequent category among the labels of training pairs whose largest change lies in
                   the same cell, when at least `min_region_support` labelled training pairs do (charts put
                   titles on top and legends at the side, so the cell says something about the kind of
                   error: fitted on 40 edits + 10 clean pairs per task it lifted F1 hard on 20 held-out
                   edits per task from 0.011 to 0.044); otherwise the task's most frequent training category;
      severity     by dissimilarity d = 1 − SSIM, cut at two fitted points (below);
      description  the most frequent training description of that category (ties: lexicographically first).

    Fitted per task on the training pairs:
      threshold    the SSIM cut that maximises the F1 of "different" (pairs with ≥ 1 labelled error) against
                   "same" (pairs labelled []) on the training set, placed halfway between the two neighbouring
                   training SSIMs it separates; among equally good cuts the lowest (the most conservative one,
                   calling the fewest pairs different). A task without training pairs keeps
                   `default_threshold`.
      severity     quantile matching: on training pairs with errors the share of pairs whose largest labelled
                   severity is 1, 2, 3 fixes the cut-offs on d, so the predicted severities are distributed as
                   the labelled ones and grow with the change. Without training errors: severity 2.
    """

    name = "pixel"
    uses_images = True

    def __init__(self, side: int = 256, default_threshold: float = 0.98, per_region: bool = True,
                 min_region_support: int = 3):
        self.side = side
        self.default_threshold = default_threshold
        self.per_region = per_region
        self.min_region_support = min_region_support
        self.thresholds: dict[str, float] = {t: default_threshold for t in CATEGORIES}
        self.severity_cuts: dict[str, Optional[tuple[float, float]]] = {t: None for t in CATEGORIES}
        self.region_categories: dict[tuple[str, str], Counter] = {}  # (task, cell) → label categories
        self.region_pairs: Counter = Counter()  # (task, cell) → labelled training pairs changed most there
        self.stats = _LabelStats([])

    # -- measurements --------------------------------------------------------------------------------------
    def measure(self, reference_rgb: np.ndarray, candidate_rgb: np.ndarray) -> tuple[float, str]:
        """(SSIM, name of the grid cell of largest change) of one pair."""
        from skimage.metrics import structural_similarity  # heavy: scikit-image, only this path needs it

        a, b = _gray(reference_rgb, self.side), _gray(candidate_rgb, self.side)
        ssim = float(structural_similarity(a, b, data_range=1.0))
        diff = np.abs(a - b)
        edges = np.linspace(0, self.side, 4).round().astype(int)
        cells = np.array([[diff[edges[r]:edges[r + 1], edges[c]:edges[c + 1]].sum() for c in range(3)]
                          for r in range(3)])
        # Ties (e.g. no change at all): the first cell in reading order.
        row, col = np.unravel_index(int(np.argmax(cells)), cells.shape)
        return ssim, region_name(int(row), int(col))

    # -- fitting -------------------------------------------------------------------------------------------
    @staticmethod
    def fit_threshold(ssims: Sequence[float], different: Sequence[bool], default: float) -> float:
        """The SSIM cut (different iff SSIM < cut) with the best F1 of "different" on these pairs."""
        if not ssims:
            return default
        s = np.asarray(ssims, float)
        y = np.asarray(different, bool)
        values = np.unique(s)  # ascending
        candidates = [*values.tolist(), math.nextafter(float(values[-1]), math.inf)]
        best, best_f1 = None, -1.0
        for k, cut in enumerate(candidates):
            pred = s < cut
            tp = int((pred & y).sum())
            fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            if f1 > best_f1:  # strict: among equal F1 the lowest cut wins
                best, best_f1 = k, f1
        if best == 0:  # "nothing is different" is best: cut just below the lowest training SSIM
            return float(values[0])
        if best == len(values):  # every pair is different: cut just above the highest
            return float(candidates[best])
        return float((values[best - 1] + values[best]) / 2)

    @staticmethod
    def fit_severity(dissimilarities: Sequence[float], severities: Sequence[int]) -> tuple[float, float]:
        """Cut-offs (c1, c2) on d: severity 1 if d ≤ c1, 2 if d ≤ c2, else 3, with the shares of 1/2/3 those
        of the labelled severities."""
        d = np.sort(np.asarray(dissimilarities, float))
        sev = np.asarray(severities, int)
        p1, p2 = float((sev == 1).mean()), float((sev == 2).mean())

        def cut(p: float) -> float:  # the d below which a share p of the labelled pairs lies
            return -math.inf if p <= 0 else float(np.quantile(d, min(1.0, p), method="inverted_cdf"))

        return cut(p1), cut(p1 + p2) if p1 + p2 < 1 else math.inf

    def fit(self, examples: Sequence[Any]) -> "PixelCritic":
        self.stats = _LabelStats(examples)
        self.region_categories, self.region_pairs = {}, Counter()
        by_task: dict[str, list[tuple[float, str, Any]]] = {t: [] for t in CATEGORIES}
        for ex in examples:
            ssim, region = self.measure(ex.reference, ex.rendering)
            by_task[ex.task].append((ssim, region, ex))
            if ex.errors:
                self.region_pairs[(ex.task, region)] += 1
            for e in ex.errors:
                self.region_categories.setdefault((ex.task, region), Counter())[e["category"]] += 1
        for task, rows in by_task.items():
            ssims, different = [s for s, _, _ in rows], [bool(ex.errors) for *_, ex in rows]
            self.thresholds[task] = self.fit_threshold(ssims, different, self.default_threshold)
            labelled = [(1 - s, max(e["severity"] for e in ex.errors)) for s, _, ex in rows if ex.errors]
            self.severity_cuts[task] = self.fit_severity(*zip(*labelled)) if labelled else None
        return self

    # -- judging -------------------------------------------------------------------------------------------
    def severity(self, task: str, dissimilarity: float) -> int:
        if self.severity_cuts[task] is None:  # no labelled training pair for this task
            return 2
        c1, c2 = self.severity_cuts[task]
        return 1 if dissimilarity <= c1 else 2 if dissimilarity <= c2 else 3

    def category(self, task: str, region: str) -> Optional[str]:
        if self.per_region and self.region_pairs[(task, region)] >= self.min_region_support:
            return self.stats.top_category(task, self.region_categories[(task, region)])
        return self.stats.top_category(task)

    def judge(self, task, reference_rgb, candidate_rgb, reference_code=None, candidate_code=None):
        ssim, region = self.measure(reference_rgb, candidate_rgb)
        if ssim >= self.thresholds[task]:
            return []
        category = self.category(task, region) or CATEGORIES[task][0]  # unfitted task: the schema's first
        description = self.stats.top_description(task, category)
        return [_error(category, self.severity(task, 1 - ssim), region, description)]


class StructuralCritic:
    """`structural_diff(task, reference_code, candidate_code)` as a critic; needs no fitting and no images.
    An item without both programs, or whose reference program the differ cannot parse, is unusable."""

    name = "structural"
    uses_images = False

    def fit(self, examples: Sequence[Any] = ()) -> "StructuralCritic":
        return self

    def judge(self, task, reference_rgb=None, candidate_rgb=None, reference_code=None, candidate_code=None):

        if not reference_code or not candidate_code:
            missing = [n for n, c in (("reference", reference_code), ("candidate", candidate_code)) if not c]
            raise CriticUnusable(f"no {' and '.join(missing)} code: the structural critic diffs programs")
        try:
            return list(structural_diff(task, reference_code, candidate_code))
        except StructuralDiffError as e:
            raise CriticUnusable(f"structural diff failed: {e}") from None


BASELINES = {"trivial": TrivialCritic, "pixel": PixelCritic, "structural": StructuralCritic}


def make_baseline(kind: str, fit_examples: Optional[Sequence[Any]] = None, **options: Any) -> Critic:
    """A fitted baseline critic by name; trivial and pixel need training examples, structural none."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline critic {kind!r}; one of {sorted(BASELINES)}")
    critic = BASELINES[kind](**options)
    if kind != "structural":
        if not fit_examples:
            raise ValueError(f"the {kind} critic is fitted on a training critic set: give examples")
        critic.fit(fit_examples)
    return critic


__all__ = ["BASELINES", "Critic", "CriticUnusable", "PixelCritic", "StructuralCritic", "TrivialCritic",
           "make_baseline", "region_name"]
