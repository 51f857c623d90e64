"""python -m pipeline.evaluate {critic,policy} ...

  critic --data PATH --critic CONFIG.yaml [--out results.json]
      VC-RewardBench metrics (F1 hard/soft, severity Pearson) of a critic on a targeted-edit set (parquet
      dir/file from `python -m pipeline.data edits`) or a local VC-RewardBench copy (.jsonl/.json). The
      config's `matcher.kind` is `deterministic` (default) or `llm_judge` (a reward backend asked yes /
      partial / no per pair, `matcher.judge.reward`); judge failures are counted and printed.
  policy --data DIR [--responses responses.jsonl] [--out results.json]
      TEDS/TEDS-S (tables), code text metrics, SSIM and MSE of rendered responses on a synth dataset, and
      for charts ChartMimic-style trace_text/layout/type/color_f1 and trace_chart_low_level (their mean);
      without --responses the reference code itself is scored (a harness check).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pipeline.config import ConfigError


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
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"--data {args.data} does not exist")
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


if __name__ == "__main__":
    sys.exit(main())
