"""Weighted composition of reward terms, failure rules, and the per-batch finalisation.

    reward = Σ_terms weight · value(term)          (terms that do not apply to the task are left out)

Failure rules come first (official code): no code, a render failure or a blank rendering (`blank_rule`:
official = an all-white chart/SVG) → every term's failure value (0; official tables −4) and
`sample.fail(...)` with the reason. A term that
cannot score one sample (no ground truth for TEDS, invalid judgement with `invalid_judgement: fail`, an
encoder error) gives its failure value for that term, and the sample records `reward:<term>:<reason>`.
Every sample gets `reward`, `reward_breakdown` (each term's unweighted value and statistics, and `total`)
and `discrepancies` (the critic's error list); nothing is dropped.

Infrastructure failures are kept apart (`infrastructure_failure`): a renderer that crashed (RenderFailure.CRASHED:
the zygote or browser died, the render actor died and its retries ran out), a reward request the pool gave up
on, a term's own error, a judgement the critic never produced. Such a sample gets `excluded` set and no reward
(None): it is masked out of the update and counted, never scored as the policy's failure — and it takes no
part in batch normalisation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.critic.config import RewardConfig
from pipeline.critic.images import BadImage, to_array
from pipeline.critic.judgement import UNREADABLE_PROGRAM, Judgement
from pipeline.render.image import is_blank
from pipeline.rewards.base import INFRASTRUCTURE, Term, Unavailable
from pipeline.rewards.baselines import (
    CodeEditDistanceReward,
    EmbeddingReward,
    PixelMSEReward,
    SSIMReward,
    TEDSReward,
)
from pipeline.rewards.visual_erm import RenderSuccess, VisualERMOfficial, VisualERMPaper
from pipeline.sample import Sample

TERMS: dict[str, type[Term]] = {
    t.name: t for t in (VisualERMPaper, VisualERMOfficial, RenderSuccess, SSIMReward, PixelMSEReward,
                        TEDSReward, CodeEditDistanceReward, EmbeddingReward)
}


@dataclass
class Partial:
    """What the per-sample phase learnt about one sample (small and picklable: it crosses Ray)."""

    uid: str
    failure: str | None = None  # a failure rule fired: "no_code", "render_failure:timeout", "blank_image"...
    measures: dict[str, dict[str, float]] = field(default_factory=dict)  # term → statistics
    unavailable: dict[str, str] = field(default_factory=dict)  # term → reason
    judgement: dict[str, Any] | None = None  # Judgement.to_dict() when the critic was asked


def is_white(rgb: np.ndarray) -> bool:
    """The official blank check (omnirender_rm_v3.py: is_white_image): every pixel of the grayscale image is
    255 (PIL's "L" conversion, so near-white pixels that round to 255 count as white)."""
    from PIL import Image

    return bool((np.asarray(Image.fromarray(rgb).convert("L")) == 255).all())


def precheck(sample: Sample, blank_tolerance: int = 2, blank_rule: str = "official") -> str | None:
    """The failure rule that applies to a sample, or None when it can be scored. `blank_rule` "official":
    only an all-white chart/SVG rendering is blank (tables are judged whatever they show); "tolerance": any
    rendering whose pixels all lie within `blank_tolerance` of one colour."""
    if not (sample.code or "").strip():
        return "no_code"
    if sample.render_error or sample.rendered_image is None:
        return f"render_failure:{sample.render_error or 'no_image'}"
    try:
        sample.rendered_image = to_array(sample.rendered_image, "rendered image")
        sample.reference_image = to_array(sample.reference_image, "reference image")
    except BadImage as e:
        return f"bad_input:{e}"
    if blank_rule == "official":
        if sample.task != "table" and is_white(sample.rendered_image):
            return "blank_image"
        return None
    # "Within `blank_tolerance` of one colour": each channel spans at most twice that. (The renderer's check,
    # ~20x faster than reducing over an (N, 3) array: ~14 ms per 640x480 image on the reward client's CPU.)
    if is_blank(sample.rendered_image, 2 * blank_tolerance):
        return "blank_image"
    return None


def infrastructure_failure(partial: Partial) -> str | None:
    """Why a sample is an infrastructure failure ("render_crashed:…", "reward_unavailable:…", "critic:…",
    "term_error:…"), or None when whatever happened to it is the policy's doing."""
    if partial.failure is not None:
        if partial.failure.startswith("unavailable:"):  # the reward pool gave up on the request
            return f"reward_{partial.failure}"
        if partial.failure == "render_failure:crashed":
            return "render_crashed"
        return None
    for reason in partial.unavailable.values():
        if reason.startswith(INFRASTRUCTURE):
            return reason.removeprefix(INFRASTRUCTURE)
    return None


class RewardFunction:
    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.terms: list[Term] = [TERMS[tc.name](cfg, tc) for tc in cfg.formula.terms]

    def needs_judgement(self, task: str) -> bool:
        return any(t.needs_judgement and t.applies(task) for t in self.terms)

    # -- phase 1: per sample ------------------------------------------------------------------------------
    def measure(self, samples: list[Sample], judgements: list[Judgement | None]) -> list[Partial]:
        """Failure rules already applied by the caller are passed in as Partials with `failure` set; here
        every term measures the samples it applies to."""
        partials = [Partial(uid=s.uid, judgement=j.to_dict() if j is not None else None)
                    for s, j in zip(samples, judgements)]
        for term in self.terms:
            rows = [i for i, s in enumerate(samples) if term.applies(s.task)]
            if not rows:
                continue
            results = term.measure_batch([samples[i] for i in rows], [judgements[i] for i in rows])
            for i, r in zip(rows, results):
                if isinstance(r, Unavailable):
                    partials[i].unavailable[term.name] = r.reason
                else:
                    partials[i].measures[term.name] = r
        return partials

    # -- phase 2: over the scored batch -------------------------------------------------------------------
    def finalize(self, samples: list[Sample], partials: list[Partial]) -> dict[str, Any]:
        """Fill reward, breakdown, discrepancies (and failure) of every sample; return batch statistics.
        Batch-normalised terms normalise over the samples of the same task in this call."""
        by_uid = {p.uid: p for p in partials}
        if len(by_uid) != len(samples) or any(s.uid not in by_uid for s in samples):
            raise ValueError("finalize: partials do not match the samples one to one")
        values: dict[tuple[str, str], float] = {}  # (uid, term) → value
        for term in self.terms:
            for task in {s.task for s in samples}:
                if not term.applies(task):
                    continue
                rows = [s for s in samples if s.task == task and by_uid[s.uid].failure is None
                        and term.name in by_uid[s.uid].measures and infrastructure_failure(by_uid[s.uid]) is None]
                for s, v in zip(rows, term.values(task, [by_uid[s.uid].measures[term.name] for s in rows])):
                    values[(s.uid, term.name)] = float(v)
        failures: Counter = Counter()
        excluded: Counter = Counter()
        for s in samples:
            p = by_uid[s.uid]
            infra = infrastructure_failure(p)
            if p.judgement is not None:
                s.extra["judgement"] = {k: p.judgement[k] for k in ("valid", "reason", "attempts", "counts",
                                                                    "counts_consistent", "latency_s", "lenient")}
            if infra is not None:  # not the policy's doing: no reward, masked out of the update
                s.excluded, s.reward, s.reward_breakdown, s.discrepancies = infra, None, {"excluded": 1.0}, []
                excluded[infra.split(":", 1)[0]] += 1
                continue
            if p.failure is None:  # `invalid_judgement: fail` and an unreadable program fail the whole sample,
                # like a failure rule
                p.failure = next((r for r in p.unavailable.values()
                                  if r.startswith(("invalid_judgement", UNREADABLE_PROGRAM))), None)
            breakdown: dict[str, float] = {}
            total = 0.0
            if p.failure is not None:
                s.fail("reward", p.failure)
                failures[p.failure.split(":", 1)[0]] += 1
                breakdown[f"failure/{p.failure.split(':', 1)[0]}"] = 1.0
            for term in self.terms:
                if not term.applies(s.task):
                    continue
                if p.failure is None and (s.uid, term.name) in values:
                    v = values[(s.uid, term.name)]
                    for k, stat in p.measures[term.name].items():
                        if k != "value":
                            breakdown[f"{term.name}/{k}"] = float(stat)
                else:
                    v = term.failure_value(s.task)
                    if p.failure is None:
                        reason = p.unavailable.get(term.name, "unavailable")
                        s.fail("reward", f"{term.name}:{reason}")
                        failures[f"{term.name}:{reason.split(':', 1)[0]}"] += 1
                        breakdown[f"{term.name}/unavailable"] = 1.0
                breakdown[term.name] = v
                total += term.weight * v
            breakdown["total"] = total
            s.reward = total
            s.reward_breakdown = breakdown
            s.discrepancies = list(p.judgement["errors"]) if p.judgement and p.judgement.get("valid") else []
        scored = [s for s in samples if s.excluded is None]
        rewards = np.array([s.reward for s in scored], dtype=float)
        # A judgement is counted once per sample even when two terms read it.
        invalid_samples = sum(1 for s in scored if by_uid[s.uid].judgement is not None
                              and not by_uid[s.uid].judgement["valid"])
        return {
            "samples": len(samples),
            "failed": sum(1 for s in scored if by_uid[s.uid].failure is not None),
            "failures": dict(failures),
            "excluded": sum(excluded.values()),
            "exclusions": dict(excluded),
            "judged": sum(1 for s in samples if by_uid[s.uid].judgement is not None),
            "invalid_judgements": invalid_samples,
            "reward_mean": float(rewards.mean()) if len(rewards) else float("nan"),
        }
