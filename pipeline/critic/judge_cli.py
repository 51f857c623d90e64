"""Score one (reference, rendering) pair from the command line.

    python -m pipeline.critic judge chart --ref REF.png --pred PRED.png [--code FILE] [--gt-code FILE]
        [--config configs/default.yaml] [--backend hf|vllm|openai|structural] [--model PATH] [key.path=value ...]

Prints one JSON object: the critic's judgement, the reward, its breakdown and the discrepancy list (or the
failure). The backend, model path and every other setting come from the config's `models:` and `reward:`
sections; `--backend` / `--model` and `reward.x.y=value` / `models.x.y=value` overrides change them.
Exit status: 0 scored (a failure reward is still a score), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.config import DEFAULT_CONFIG
from pipeline.critic.config import RewardConfig
from pipeline.critic.images import BadImage, to_array
from pipeline.models.config import ModelsConfig
from pipeline.sample import TASK_KINDS, Sample
from pipeline.schema import (
    ConfigError,
    Strict,
    apply_overrides,
    check_keys,
    read_yaml_mapping,
    validate,
)

NO_CODE_GIVEN = "# (no code given on the command line)"


class JudgeSettings(Strict):
    """What a judgement needs of a run config: its `models:` and `reward:` sections."""

    models: ModelsConfig = ModelsConfig()
    reward: RewardConfig = RewardConfig()


def load_reward_settings(config: str | None, overrides: list[str]) -> tuple[ModelsConfig, RewardConfig]:
    """The `models:` and `reward:` sections of a preset (default: configs/default.yaml), with overrides of
    those sections; an unknown key, in the file or on the command line, fails with its path."""
    path = Path(config) if config else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = {k: v for k, v in read_yaml_mapping(path).items() if k in JudgeSettings.model_fields}
    check_keys(data, JudgeSettings, prefix="", source=str(path))
    settings = validate(JudgeSettings, apply_overrides(data, JudgeSettings, overrides), source=str(path))
    return settings.models, settings.reward


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.critic judge", description=__doc__.split("\n\n")[0])
    ap.add_argument("task", choices=TASK_KINDS)
    ap.add_argument("--ref", required=True, help="reference image (PNG/JPEG)")
    ap.add_argument("--pred", required=True, help="rendered prediction (PNG/JPEG)")
    ap.add_argument("--code", help="file with the predicted code (enables the no-code rule and text baselines)")
    ap.add_argument("--gt-code", help="file with the ground-truth code (TEDS, edit distance; the reference program "
                                      "the structural oracle diffs --code against)")
    ap.add_argument("--config", help=f"YAML preset with models:/reward: sections (default {DEFAULT_CONFIG})")
    ap.add_argument("--backend", choices=["hf", "vllm", "openai", "structural", "fingerprint"])
    ap.add_argument("--model", help="reward model: 'tiny' or a local HF checkpoint directory")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("overrides", nargs="*", help="reward.x.y=value / models.x.y=value")
    args = ap.parse_intermixed_args(argv)
    # Libraries pulled in by the model stack print to stdout (deepspeed's accelerator notice, progress
    # bars); stdout carries only our JSON, so everything else goes to stderr while we work.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        out, code = _run(args)
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    if out is not None:
        print(out, flush=True)
    return code


def _run(args: argparse.Namespace) -> tuple[str | None, int]:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"reward.backend={args.backend}")
    if args.model:
        overrides.append(f"models.reward.path={args.model}")
    try:
        models, cfg = load_reward_settings(args.config, overrides)
    except (ValueError, ValidationError, yaml.YAMLError) as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return None, 2
    try:
        reference = to_array(args.ref, "reference image")
    except BadImage as e:
        return json.dumps({"task": args.task, "reward": None, "failure": f"bad_input:{e}"}), 2
    try:
        rendered = Path(args.pred).read_bytes()  # decoded by the failure rules: a corrupt file is a failure
    except OSError as e:
        print(f"cannot read --pred: {e}", file=sys.stderr)
        return None, 2
    code = Path(args.code).read_text() if args.code else NO_CODE_GIVEN
    sample = Sample(task=args.task, reference_image=reference, prompt_id="cli", code=code,
                    rendered_image=rendered,  # type: ignore[arg-type]
                    ground_truth_code=Path(args.gt_code).read_text() if args.gt_code else None)

    from pipeline.critic.scorer import LOCAL_MODEL_BACKENDS, RewardScorer
    from pipeline.tiny import ensure_models

    scorer = RewardScorer(cfg, ensure_models(models, policy=False, reward=cfg.backend in LOCAL_MODEL_BACKENDS))
    try:
        stats = scorer.score([sample])
    finally:
        scorer.close()
    out = {
        "task": sample.task,
        "backend": cfg.backend,
        "judgement": sample.extra.get("judgement"),
        "discrepancies": sample.discrepancies,
        "reward": sample.reward,
        "breakdown": sample.reward_breakdown,
        "failure": sample.failure,
        "invalid_judgements": stats["invalid_judgements"],
    }
    return json.dumps(out, indent=2, ensure_ascii=False), 0


if __name__ == "__main__":
    sys.exit(main())
