"""Critics on held-out critic sets: a learned critic against the non-learned floor it has to clear.

    .venv/bin/python benchmarks/critic.py (--heldout DIR | --build N) [--train DIR] [--trained PATH]
        [--untrained PATH] [--critics untrained trained trivial pixel structural] [--sets edit natural]
        [--natural K] [--out DIR] [--cache-dir DIR] [--max-new-tokens 400] [--threads 2] [--no-progress]

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
structural teacher. The baselines are fitted on --train DIR; with --build and no --train a small training
set is built too (split "critic-train", N edits and N // 4 clean pairs per task).
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
SETS = ("edit", "natural", "clean")
TASKS = TASK_KINDS


def build_sets(n: int, natural: int, out: Path, need_train: bool, cache_dir: str, progress: bool
               ) -> tuple[Path, Path | None]:
    """A held-out set (and, when asked, a training set for the baselines) built by the data engine."""
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset
    from pipeline.models.config import ModelsConfig
    from pipeline.tiny import ensure_models

    heldout = out / "heldout"
    build_critic_dataset(CriticDataConfig(split="critic-heldout", edits_per_task=n, clean_per_task=0,
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


def rows_of(critic: str, set_name: str, report: dict) -> list[dict]:
    """Table rows (per task present, then overall) from one `evaluate_critic` report."""
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
                     "n_predicted": s["n_predicted"], "n_annotated": s["n_annotated"]})
    return rows


def markdown(rows: list[dict]) -> str:
    def num(x: float, digits: int = 3) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    def rate(x: float) -> str:
        return "∞" if math.isinf(x) else f"{x:.1f}" if x < 1000 else f"{x:.3g}"

    lines = ["| critic | set | task | items | F1 hard | F1 soft | severity r | invalid | judg./s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['critic']} | {r['set']} | {r['task']} | {r['items']} | {num(r['f1_hard'])} | "
                     f"{num(r['f1_soft'])} | {num(r['severity_pearson'])} | {r['invalid_rate']:.1%} | "
                     f"{rate(r['judgements_per_s'])} |")
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

    rows, details = [], {}
    for name in critics:
        source = critic_source(name, args, limits)
        config = CriticEvalConfig(critic=source)
        t0 = time.perf_counter()
        predict = make_predictor(config)  # loaded / fitted once, used for every set
        setup_s = time.perf_counter() - t0
        try:
            for set_name in sets:
                report = evaluate_critic(heldout, config, progress=progress, sources=[set_name],
                                         predictor=predict, desc=f"{name} on {set_name}")
                rows += rows_of(name, set_name, report)
                details[f"{name}/{set_name}"] = {
                    "setup_s": setup_s, "critic_seconds": report["critic_seconds"],
                    "unusable": report["critic_unusable_answers"], "unscored": report["unscored"],
                    "unusable_examples": _backend_examples(predict)}
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
            "sets": sets, "max_new_tokens": args.max_new_tokens, "threads": args.threads, "rows": rows,
            "details": details}), indent=2) + "\n")
    return 0


def _backend_examples(predict) -> list[dict]:
    """The first few invalid model answers (for a critic behind a reward backend), to see why they failed."""
    backend = getattr(predict, "backend", None)
    return list(backend.stats.invalid_examples) if backend is not None else []


if __name__ == "__main__":
    sys.exit(main())
