"""What limits the tiny policy's revisions: the feedback, the items, or the policy?

`python -m pipeline.evaluate revise` with `revision.keep=last` shows the tiny policy's revised programs
breaking (render rate falling round after round) whatever the feedback. This probe separates the causes on
items whose right answer is known exactly, with greedy decoding, one revision round:

  sets     seen     the warm start's own revision examples: its compact programs (split "train") with the same
                    targeted edits (same seeds), i.e. training items
           unseen   compact programs of split "test" with fresh edits: the same distribution, never trained on
  turns    first    the first turn on the reference image alone (can it write the program at all?)
           oracle   a revision turn: the edited program as its previous answer, its rendering, and the oracle
                    critic's discrepancies (the structural diff: what the warm start's examples showed)
           render_only   the same turn with the discrepancies withheld ("compare it with the reference")
           copy     a revision turn whose previous answer is the *correct* program, with "- none found"
                    (does it at least repeat a right answer?)

Per set × turn: items, render rate, restored (the answer is the original program, whitespace aside), the
oracle's severity total S of the answer (before: of the edited program) and tokens. Reading: if `first` and
`copy` restore most items but `oracle` does not, the revision prompt is the limit; if `seen` restores and
`unseen` does not, the warm start memorised its examples instead of learning to revise; if neither restores,
the policy's capacity is.

    .venv/bin/python benchmarks/revision_limits.py [--items 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from pipeline.critic.structural import structural_diff
from pipeline.data.compact import COMPACT_KINDS, RENDER_SIZE, compact_program
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.data.loader import policy_messages
from pipeline.render import make_renderer
from pipeline.revision import revision_turn
from pipeline.sample import Sample
from pipeline.tasks import get_task
from pipeline.tiny.warm_start import html_body

TURNS = ("first", "oracle", "render_only", "copy")


def _normalized(code: str | None) -> str:
    return " ".join((code or "").split())


def build_items(kind: str, renderer, n: int, split: str, seed: int) -> list[dict]:
    """Up to n (original, edited, images, labels) items; `seen` uses the warm start's own programs and edit
    seeds (pipeline/tiny/warm_start.py: revision_examples)."""
    items = []
    for i in range(4 * n):
        if len(items) >= n:
            break
        original = compact_program(kind, i, seed=seed, split=split)
        reference = renderer.render(original, size=RENDER_SIZE[kind])
        if not reference.ok:
            continue
        source = html_body(original) if kind == "table" else original
        rng = random.Random(f"{seed}/revision/{kind}/{i}" if split == "train" else f"probe/{kind}/{i}")
        try:
            edited, _ = propose_edit(kind, source, rng)
        except EditNotApplicable:
            continue
        rendering = renderer.render(edited, size=RENDER_SIZE[kind])
        if not rendering.ok or np.array_equal(rendering.image, reference.image):
            continue
        items.append({"kind": kind, "original": original, "edited": edited, "reference": reference.image,
                      "rendering": rendering.image})
    return items


def prompt_for(item: dict, turn: str, index: int) -> Sample:
    kind = item["kind"]
    if turn == "first":
        return Sample(task=kind, reference_image=item["reference"], prompt_id=f"{kind}/{index}",
                      messages=policy_messages(kind))
    copy = turn == "copy"
    code = item["original"] if copy else item["edited"]
    errors = [] if copy else structural_diff(kind, item["original"], item["edited"], max_errors=8)
    previous = Sample(task=kind, reference_image=item["reference"], prompt_id=f"{kind}/{index}",
                      messages=policy_messages(kind), code=code,
                      rendered_image=item["reference"] if copy else item["rendering"], discrepancies=errors,
                      extra={"judgement": {"valid": True, "reason": None}})
    return revision_turn(previous, feedback_mode="render_only" if turn == "render_only" else "critic")


def score(item: dict, answer: Sample, renderer) -> dict[str, float]:
    kind = item["kind"]
    code = get_task(kind).extract_code(answer.response_text).code
    rendered = code is not None and renderer.render(code, size=RENDER_SIZE[kind]).ok
    try:
        severity = sum(e["severity"] for e in structural_diff(kind, item["original"], code or "")) if rendered \
            else float("nan")
    except Exception:  # noqa: BLE001 - a differ failure is no score for this item, counted as nan
        severity = float("nan")
    return {"render": float(rendered), "restored": float(_normalized(code) == _normalized(item["original"])),
            "severity": severity, "tokens": float(len(answer.response_ids or ()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=16, help="items per task kind and set")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from pipeline.config import load_config
    from pipeline.rollout import make_rollout
    from pipeline.tiny import ensure_models

    cfg = load_config(None, [])
    models = ensure_models(cfg.models, reward=False)
    rollout = make_rollout(models, cfg.rollout, device="cpu", seed=0)
    seed = cfg.models.policy.tiny.seed
    rows: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for split, name in (("train", "seen"), ("test", "unseen")):
        per_turn: dict[str, list[dict]] = {t: [] for t in TURNS}
        before = []
        for kind in COMPACT_KINDS:
            renderer = make_renderer(kind)
            try:
                items = build_items(kind, renderer, args.items, split, seed)
                before += [sum(e["severity"] for e in structural_diff(kind, it["original"], it["edited"]))
                           for it in items]
                for turn in TURNS:
                    answers = rollout.generate([prompt_for(it, turn, i) for i, it in enumerate(items)], 1, True)
                    per_turn[turn] += [score(it, a, renderer) for it, a in zip(items, answers)]
            finally:
                renderer.close()
        for turn, scores in per_turn.items():
            sev = [s["severity"] for s in scores if not np.isnan(s["severity"])]
            rows[f"{name}/{turn}"] = {
                "items": len(scores), "render": float(np.mean([s["render"] for s in scores])),
                "restored": float(np.mean([s["restored"] for s in scores])),
                "severity": float(np.mean(sev)) if sev else float("nan"),
                "severity_before": float(np.mean(before)) if turn in ("oracle", "render_only") else float("nan"),
                "tokens": float(np.mean([s["tokens"] for s in scores]))}
    lines = ["| set / turn | items | render | restored | S (rendered answers) | S of the edited program | tokens |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in rows.items():
        sb = "–" if np.isnan(r["severity_before"]) else f"{r['severity_before']:.2f}"
        s = "–" if np.isnan(r["severity"]) else f"{r['severity']:.2f}"
        lines.append(f"| {key} | {r['items']} | {r['render']:.3f} | {r['restored']:.3f} | {s} | {sb} | "
                     f"{r['tokens']:.0f} |")
    table = "\n".join(lines)
    print(table)
    print(f"\n{time.perf_counter() - t0:.0f} s, policy {models.policy.path}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "revision_limits.md").write_text(table + "\n")
        (args.out / "revision_limits.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
