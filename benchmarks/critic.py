"""Critics on held-out critic sets: a learned critic against the non-learned floor it has to clear.

    .venv/bin/python benchmarks/critic.py (--heldout DIR | --build N) [--train DIR] [--trained PATH]
        [--untrained PATH] [--critics untrained trained trivial pixel structural] [--sets edit natural]
        [--natural K] [--out DIR] [--cache-dir DIR] [--max-new-tokens 400] [--threads 2] [--swap-seed 0]
        [--no-progress]

Prints ONE markdown table (and with --out writes it as critic.md, plus critic.json with every number):
one row per critic × held-out set × task (chart, table, svg, overall) with

  items      pairs scored
  F1 hard / F1 soft / severity r   VC-RewardBench metrics (`pipeline/metrics/critic.py`: same category +
             word overlap of location + description; soft counts a partial match ½; Pearson of per-item
             severity totals, "n/a" when undefined, e.g. a critic whose totals are constant)
  invalid    answers that were not usable, over items: a model answer that is not schema-valid (cut off at
             max_new_tokens: constrained decoding admits nothing else), or an item a baseline cannot judge
             (the structural critic without both programs, or with an unparseable reference); each is scored
             as "found nothing", as the reward would
  judg./s    items judged over the wall time spent inside the critic's calls (no model loading, fitting or
             scoring), per row

and, "look before you trust", whether the critic uses its images (`pipeline/critic/image_use.py`; the model
critics' columns are teacher-forced likelihoods through the HF backend's own prompt, image preparation and
answer format, measured after and apart from the judg./s timing):

  NLL true     model critics: the mean per-token NLL (nats, answer tokens + eos) of each row's reference answer
               (its label, serialized in the served answer format: the text the critic is trained to emit)
               given the row's own two images, averaged over the row's items
  NLL swapped  the same answers given another pair's images of the same task and set (a fixed seeded
               derangement, --swap-seed: every pair lends its images to exactly one other)
  ΔNLL         NLL swapped − NLL true. A critic that reads its images finds its own pair's answer more likely:
               ΔNLL clearly > 0. A critic that ignores them scores both the same: ΔNLL ≈ 0. "n/a" for the
               baselines (no likelihoods) and for a task with fewer than two pairs
  AUROC clean  how well a score separates clean pairs (positive: the held-out set's `clean` rows, same task)
               from this set's pairs with at least one labelled error (edit: every row; natural: the rows the
               teacher found something in). Model critics: the per-token log-likelihood of the "nothing wrong"
               answer (empty error list, in the task's answer format) given the pair; baselines: minus the
               severity total of the errors they list (0 when they list none or cannot judge the item). 1.0 =
               every clean pair ranked above every flawed one; 0.5 = no separation (a blind critic, e.g.
               trivial's constant answer); "n/a" without clean or without flawed pairs (and on the clean set's
               own rows). The structural critic diffs the programs (an exact oracle): ≈ 1.0

Critics:
  untrained   the random tiny critic (`ModelConfig(tiny=TinyModelConfig(seed=1))`, the embedded default's
              reward model, built offline into --cache-dir), or the checkpoint --untrained names
  trained     --trained PATH: a trained critic checkpoint directory (HF); run only when given
  trivial / pixel / structural   the baselines of `pipeline/critic/baselines.py` (trivial and pixel fitted on
              --train)
Model critics run through the HF reward backend with greedy decoding (temperature 0, no presence penalty),
`--max-new-tokens` per answer, one attempt (a greedy retry repeats the same answer) and `--threads` torch
threads, under the answer limits the held-out set was written with.

Inputs: --heldout DIR, a held-out critic set (`pipeline/critic/training/dataset.py`; its rows are split by `source`
into the sets edit / natural[ / clean]); or --build N, which builds one (split "critic-heldout": never a
training pair) with N edits and --natural (default N // 2) policy rollouts per task, labelled by the
structural teacher, and max(1, N // 4) clean pairs per task (for AUROC clean; a --heldout set without
clean rows prints "n/a" there). The baselines are fitted on --train DIR; with --build and no --train a small
training set is built too (split "critic-train", N edits and N // 4 clean pairs per task).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluate.benchmark import evaluate_critic, make_predictor  # noqa: E402
from pipeline.evaluate.config import CriticEvalConfig, CriticSource
from pipeline.sample import TASK_KINDS  # noqa: E402

CRITICS = ("untrained", "trained", "trivial", "pixel", "structural")
MODEL_CRITICS = ("untrained", "trained")  # behind the HF reward backend: the image-use columns are likelihoods
SETS = ("edit", "natural", "clean")
TASKS = TASK_KINDS
IMAGE_USE_KEYS = ("nll_true", "nll_swapped", "delta_nll", "auroc_clean")


def build_sets(n: int, natural: int, out: Path, need_train: bool, cache_dir: str, progress: bool
               ) -> tuple[Path, Path | None]:
    """A held-out set (and, when asked, a training set for the baselines) built by the data engine."""
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset
    from pipeline.models.config import ModelsConfig
    from pipeline.tiny import ensure_models

    heldout = out / "heldout"
    build_critic_dataset(CriticDataConfig(split="critic-heldout", edits_per_task=n, clean_per_task=max(1, n // 4),
                                          natural_per_task=natural), heldout,
                         models=ensure_models(ModelsConfig(cache_dir=cache_dir), reward=False), progress=progress)
    train = None
    if need_train:
        train = out / "train"
        build_critic_dataset(CriticDataConfig(split="critic-train", edits_per_task=n,
                                              clean_per_task=max(1, n // 4)), train, progress=progress)
    return heldout, train


def model_source(path: str, limits: dict, max_new_tokens: int, threads: int) -> CriticSource:
    """A checkpoint as the critic, through the HF reward backend, decoding as an evaluation should: greedy,
    so the numbers are reproducible, and once (greedy retries answer the same)."""
    sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "presence_penalty": 0.0,
                "max_new_tokens": max_new_tokens}
    reward = {"backend": "hf", "max_attempts": 1, "limits": limits,
              "hf": {"num_threads": threads, "max_batch_size": 8},
              "tasks": {t: {"sampling": sampling} for t in TASKS}}
    return CriticSource(kind="reward_backend", reward=reward, model_path=path, batch_size=8)


def critic_source(name: str, args, limits: dict) -> CriticSource:
    from pipeline.models import model_dir
    from pipeline.models.config import ModelConfig, TinyModelConfig
    from pipeline.tiny import ensure_model

    if name == "untrained":
        tiny = ModelConfig(tiny=TinyModelConfig(seed=1))  # the embedded default's (random) reward model
        path = args.untrained or str(ensure_model(tiny, args.cache_dir))
        return model_source(path, limits, args.max_new_tokens, args.threads)
    if name == "trained":
        path = str(model_dir(args.trained))  # checks config.json
        return model_source(path, limits, args.max_new_tokens, args.threads)
    return CriticSource(kind=name, fit_data=str(args.train) if name != "structural" else None)


# ------------------------------------------------------------------------------------------ image use
def heldout_examples(heldout: Path, limits: dict) -> dict[str, dict[str, list]]:
    """The held-out set's checked examples (images decoded, label errors) by source, then task."""
    from pipeline.critic.training.dataset import read_examples  # heavy: pyarrow, like read_manifest below
    from pipeline.sample import JudgementLimits  # beside the import above

    out: dict[str, dict[str, list]] = {}
    for ex in read_examples(heldout, JudgementLimits.model_validate(limits)):
        out.setdefault(ex.source, {}).setdefault(ex.task, []).append(ex)
    return out


def clean_test_split(examples: dict[str, dict[str, list]], set_name: str, task: str) -> tuple[list, list]:
    """(clean pairs, this set's flawed pairs) of one task: the two sides of AUROC clean (the clean set's own
    rows have no flawed side)."""
    clean = examples.get("clean", {}).get(task, [])
    flawed = [] if set_name == "clean" else [e for e in examples.get(set_name, {}).get(task, []) if e.errors]
    return clean, flawed


def model_image_use(predict, examples: dict[str, dict[str, list]], sets: list[str], seed: int
                    ) -> tuple[dict, dict]:
    """A model critic's swap test on every (set, task) and its clean-test score of every pair that needs one,
    through the loaded HF backend's model, processor and settings (`pipeline/critic/image_use.py`)."""
    from pipeline.critic.image_use import AnswerScorer  # heavy: torch (only model critics need it)

    scorer = AnswerScorer.from_backend(predict.backend)
    swap: dict[tuple[str, str], dict] = {}
    for set_name in sets:
        for task in TASKS:
            exs = examples.get(set_name, {}).get(task, [])
            result = scorer.swap_test(task, [(e.reference, e.rendering) for e in exs],
                                      [scorer.answer(task, e.errors) for e in exs], seed)
            if result is not None:
                true, swapped = result
                swap[(set_name, task)] = {"ids": [e.id for e in exs], "nll_true": [t.nll for t in true],
                                          "nll_swapped": [w.nll for w in swapped]}
    clean_scores: dict[str, float] = {}
    for task in TASKS:
        needed = {e.id: e for set_name in sets for side in clean_test_split(examples, set_name, task) for e in side}
        exs = list(needed.values())
        if exs:
            scores = scorer.nothing_wrong_scores(task, [(e.reference, e.rendering) for e in exs])
            clean_scores.update({e.id: s for e, s in zip(exs, scores)})
    return swap, clean_scores


def baseline_clean_scores(predict, heldout: Path, examples: dict[str, dict[str, list]], sets: list[str]
                          ) -> dict[str, float]:
    """A baseline's clean-test score of every pair that needs one: minus the severity total of the errors it
    lists (0 for none, and for an item it cannot judge: scored "found nothing", as everywhere else)."""
    from pipeline.evaluate.records import BenchItem, iter_bench_items  # only the baselines' clean test

    needed = {e.id for set_name in sets for task in TASKS
              for side in clean_test_split(examples, set_name, task) for e in side}
    items = [i for i in iter_bench_items(heldout) if isinstance(i, BenchItem) and i.id in needed]
    scores = {}
    for item, answer in zip(items, predict(items) if items else []):
        errors = (answer.get("errors") or []) if isinstance(answer, dict) else []  # else: no usable answer
        scores[item.id] = -float(sum(int(e.get("severity") or 0) for e in errors))
    return scores


def image_use_stats(swap: dict, clean_scores: dict[str, float], examples: dict[str, dict[str, list]],
                    set_name: str) -> dict[str, dict]:
    """Per task present (and overall, pooled over tasks) of one set: the image-use columns and their counts."""
    from pipeline.metrics.critic import auroc  # only the image-use columns need it

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    out, pooled = {}, {"true": [], "swapped": [], "clean": [], "flawed": []}
    for task in TASKS:
        s = swap.get((set_name, task), {"nll_true": [], "nll_swapped": []})
        clean, flawed = clean_test_split(examples, set_name, task)
        pos = [clean_scores[e.id] for e in clean if e.id in clean_scores]
        neg = [clean_scores[e.id] for e in flawed if e.id in clean_scores]
        for key, values in (("true", s["nll_true"]), ("swapped", s["nll_swapped"]), ("clean", pos), ("flawed", neg)):
            pooled[key] += values
        out[task] = (s["nll_true"], s["nll_swapped"], pos, neg)
    out["overall"] = (pooled["true"], pooled["swapped"], pooled["clean"], pooled["flawed"])
    stats = {}
    for task, (true, swapped, pos, neg) in out.items():
        stats[task] = {"nll_true": mean(true), "nll_swapped": mean(swapped),
                       "delta_nll": mean(swapped) - mean(true) if true else math.nan,
                       "swapped_higher": mean([float(w > t) for t, w in zip(true, swapped)]),
                       "n_swap": len(true), "auroc_clean": auroc(pos, neg), "n_clean": len(pos),
                       "n_flawed": len(neg)}
    return stats


def rows_of(critic: str, set_name: str, report: dict, image_use: dict | None = None) -> list[dict]:
    """Table rows (per task present, then overall) from one `evaluate_critic` report, with the image-use
    columns of `image_use_stats` (NaN where there are none)."""
    unusable, seconds, judged = (report["critic_unusable_by_task"], report["critic_seconds_by_task"],
                                 report["critic_items_by_task"])
    rows = []
    for task in [*(t for t in TASKS if t in report["summary"]), "overall"]:
        s = report["summary"][task]
        tasks = TASKS if task == "overall" else (task,)
        n_judged = sum(judged.get(t, 0) for t in tasks)
        secs = sum(seconds.get(t, 0.0) for t in tasks)
        rows.append({"critic": critic, "set": set_name, "task": task, "items": s["items"],
                     "f1_hard": s["f1_hard"], "f1_soft": s["f1_soft"],
                     "severity_pearson": s["severity_pearson"],
                     "invalid_rate": sum(unusable.get(t, 0) for t in tasks) / n_judged if n_judged else 0.0,
                     "judgements_per_s": n_judged / secs if secs > 0 else math.inf,
                     "n_predicted": s["n_predicted"], "n_annotated": s["n_annotated"],
                     **{k: math.nan for k in IMAGE_USE_KEYS}, **((image_use or {}).get(task) or {})})
    return rows


def markdown(rows: list[dict]) -> str:
    def num(x: float, digits: int = 3) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    def rate(x: float) -> str:
        return "∞" if math.isinf(x) else f"{x:.1f}" if x < 1000 else f"{x:.3g}"

    def signed(x: float) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:+.4f}"

    lines = [("| critic | set | task | items | F1 hard | F1 soft | severity r | invalid | judg./s | NLL true | "
              "NLL swapped | ΔNLL | AUROC clean |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['critic']} | {r['set']} | {r['task']} | {r['items']} | {num(r['f1_hard'])} | "
                     f"{num(r['f1_soft'])} | {num(r['severity_pearson'])} | {r['invalid_rate']:.1%} | "
                     f"{rate(r['judgements_per_s'])} | {num(r['nll_true'])} | {num(r['nll_swapped'])} | "
                     f"{signed(r['delta_nll'])} | {num(r['auroc_clean'])} |")
    return "\n".join(lines)


def _json_safe(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--heldout", type=Path, help="a held-out critic set (edit and natural rows)")
    src.add_argument("--build", type=int, metavar="N", help="build a held-out set: N edits per task")
    ap.add_argument("--natural", type=int, help="with --build: natural rows per task (default N // 2)")
    ap.add_argument("--train", type=Path, help="critic SFT set the trivial / pixel baselines are fitted on")
    ap.add_argument("--trained", help="a trained critic checkpoint directory")
    ap.add_argument("--untrained", help="the untrained critic's checkpoint (default: the random tiny critic)")
    ap.add_argument("--critics", nargs="+", choices=CRITICS,
                    help="default: all (trained only with --trained)")
    ap.add_argument("--sets", nargs="+", choices=SETS, default=["edit", "natural"])
    ap.add_argument("--out", type=Path, help="write critic.md and critic.json here (and built sets)")
    ap.add_argument("--cache-dir", help="where the tiny models are built (and the tiny policy of --build)",
                    default=os.environ.get("CRITIC_BENCH_CACHE", "~/.cache/visual-erm-rl/models"))
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the model critics")
    ap.add_argument("--swap-seed", type=int, default=0,
                    help="seed of the derangement that lends each pair another pair's images (NLL swapped)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress

    critics = args.critics or [c for c in CRITICS if c != "trained" or args.trained]
    if "trained" in critics and not args.trained:
        ap.error("critic 'trained' needs --trained PATH (a trained critic checkpoint)")
    fitted = [c for c in critics if c in ("trivial", "pixel")]
    if fitted and not args.train and args.build is None:
        ap.error(f"critics {fitted} are fitted on a training critic set: give --train DIR (or use --build)")

    work = args.out or Path(tempfile.mkdtemp(prefix="critic-bench-"))
    heldout = args.heldout
    if args.build is not None:
        natural = args.build // 2 if args.natural is None else args.natural
        heldout, built_train = build_sets(args.build, natural, work, bool(fitted and not args.train),
                                          args.cache_dir, progress)
        args.train = args.train or built_train

    from pipeline.critic.training.dataset import read_manifest

    manifest = read_manifest(heldout)
    limits = manifest.get("limits") or {}
    present = {s for per_task in manifest.get("rows", {}).values() for s in per_task}
    sets = [s for s in args.sets if s in present]
    skipped = [s for s in args.sets if s not in present]
    if skipped:
        print(f"held-out set {heldout} has no {' / '.join(skipped)} rows: those sets are left out",
              file=sys.stderr)
    if "clean" not in present:
        print(f"held-out set {heldout} has no clean rows: AUROC clean is n/a", file=sys.stderr)
    examples = heldout_examples(heldout, limits)

    rows, details = [], {}
    for name in critics:
        source = critic_source(name, args, limits)
        config = CriticEvalConfig(critic=source)
        t0 = time.perf_counter()
        predict = make_predictor(config)  # loaded / fitted once, used for every set
        setup_s = time.perf_counter() - t0
        try:
            reports = {set_name: evaluate_critic(heldout, config, progress=progress, sources=[set_name],
                                                 predictor=predict, desc=f"{name} on {set_name}")
                       for set_name in sets}
            t0 = time.perf_counter()  # image use: after, and apart from, the judg./s timing
            if name in MODEL_CRITICS:
                swap, clean_scores = model_image_use(predict, examples, sets, args.swap_seed)
            else:
                swap, clean_scores = {}, baseline_clean_scores(predict, heldout, examples, sets)
            image_use_s = time.perf_counter() - t0
            if progress:
                print(f"{name}: image use measured in {image_use_s:.1f} s", file=sys.stderr)
            for set_name, report in reports.items():
                stats = image_use_stats(swap, clean_scores, examples, set_name)
                rows += rows_of(name, set_name, report, stats)
                details[f"{name}/{set_name}"] = {
                    "setup_s": setup_s, "critic_seconds": report["critic_seconds"],
                    "unusable": report["critic_unusable_answers"], "unscored": report["unscored"],
                    "unusable_examples": _backend_examples(predict), "image_use_s": image_use_s,
                    "image_use": {task: {**stats[task], "per_item": swap.get((set_name, task))} for task in stats},
                    "clean_test_scores": {e.id: clean_scores[e.id] for t in TASKS
                                          for side in clean_test_split(examples, set_name, t)
                                          for e in side if e.id in clean_scores}}
        finally:
            if hasattr(predict, "close"):
                predict.close()

    table = markdown(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "critic.md").write_text(table + "\n")
        (args.out / "critic.json").write_text(json.dumps(_json_safe({
            "heldout": str(heldout), "train": str(args.train) if args.train else None, "critics": critics,
            "sets": sets, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
            "swap_seed": args.swap_seed, "rows": rows,
            "details": details}), indent=2) + "\n")
    return 0


def _backend_examples(predict) -> list[dict]:
    """The first few invalid model answers (for a critic behind a reward backend), to see why they failed."""
    backend = getattr(predict, "backend", None)
    return list(backend.stats.invalid_examples) if backend is not None else []


if __name__ == "__main__":
    sys.exit(main())
