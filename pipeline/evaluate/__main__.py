"""python -m pipeline.evaluate {critic,policy} ...

  critic --data PATH --critic CONFIG.yaml [--out results.json]
      VC-RewardBench metrics (F1 hard/soft, severity Pearson) of a critic on a targeted-edit set (parquet
      dir/file from `python -m pipeline.data edits`) or a local VC-RewardBench copy (.jsonl/.json). The
      config's defaults reproduce the official counting (`matcher.kind: official`: one judge answer per item
      aligns the lists — `matcher.judge.reward`, or on CPU without one a deterministic word-overlap judge;
      items whose judge failed are dropped); `counting: strict` with `matcher.kind: deterministic | llm_judge`
      is our stricter variant. Judge failures are counted and printed.
  policy --data DIR [--responses responses.jsonl] [--out results.json]
      the driver's held-out metrics, under its names (eval/<task>/...), of rendered responses on a synth
      dataset: render_ok, ssim, mse, teds (tables), and for charts ChartMimic-style text_f1 / layout_f1 /
      type_f1 / color_f1 and low_level (their mean); each task's code-level metrics (TEDS-S, edit similarity,
      ...) beside them as code/<name>. Without --responses the reference code itself is scored (a harness
      check).
  revise --rounds K [--config PRESET] [--data PATH ...] [--out DIR] [key.path=value ...]
      test-time reflection & revision: the run config's policy answers each held-out prompt, its critic
      judges, the policy revises with that feedback up to K rounds (revision.keep: best | last); prints render
      rate, critic reward, SSIM/MSE, TEDS, chart F1, tokens and seconds per task and round, and writes
      revision.json / revision.md / revision.png to --out. Without --data: the config's held-out split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pipeline.schema import ConfigError


def _json_safe(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("critic")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--critic", type=Path, required=True, help="YAML CriticEvalConfig")
    c.add_argument("--out", type=Path)
    c.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("policy")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--responses", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("revise")
    r.add_argument("--rounds", type=int, required=True)
    r.add_argument("--config", default=None, help="run preset (default: configs/default.yaml)")
    r.add_argument("--data", type=Path, nargs="*", help="parquet files/dirs (default: the config's eval split)")
    r.add_argument("--out", type=Path, help="directory for revision.json / .md / .png")
    r.add_argument("overrides", nargs="*", help="run config overrides, key.path=value")
    args = parser.parse_args(argv)
    for path in args.data if isinstance(args.data, list) else [args.data] if args.data else []:
        if not path.exists():
            parser.error(f"--data {path} does not exist")
    if args.command == "revise":
        return _revise(args, parser)
    try:
        if args.command == "critic":
            from pipeline.evaluate.benchmark import evaluate_critic, format_summary
            from pipeline.evaluate.config import load_critic_config

            report = evaluate_critic(args.data, load_critic_config(args.critic), progress=not args.no_progress)
            print(format_summary(report["summary"]))
            print(f"matcher: {report['matcher']}, "
                  f"unusable critic answers: {report['critic_unusable_answers']}, judge failures: {report['judge_failures']}, unscored items: {len(report['unscored'])}")
            if report["judge"]:
                print(f"judge: {json.dumps(report['judge'])}")
        else:
            from pipeline.evaluate.policy import evaluate_policy, format_policy_summary, load_responses

            responses = load_responses(args.responses) if args.responses else None
            report = evaluate_policy(args.data, responses, progress=not args.no_progress)
            print(format_policy_summary(report["summary"]))
            print(json.dumps(report["counts"]))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    return 0


def _revise(args, parser) -> int:
    from pipeline.config import load_config
    from pipeline.evaluate.revision import evaluate_revision, format_revision_table, write_report
    from pipeline.runlog.tracking import setup_console_logging

    if args.rounds < 0:
        parser.error("--rounds must be >= 0")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    setup_console_logging(cfg.logging.level)
    try:
        report = evaluate_revision(cfg, args.rounds, args.data or None)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_revision_table(report))
    if args.out:
        paths = write_report(_json_safe(report), args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
