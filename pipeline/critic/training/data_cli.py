"""python -m pipeline.critic data --out DIR [--config CRITIC_DATA.yaml] [options] [key.path=value ...]

Builds a critic SFT set (format: pipeline/critic/training/dataset.py) from targeted edits, clean pairs and the
policy's natural errors. The YAML (and the overrides) follow `CriticDataConfig` (data_builder.py), e.g.

    python -m pipeline.critic data --out data/critic-train edits_per_task=500 natural_per_task=200
    python -m pipeline.critic data --out data/critic-heldout split=critic-heldout seed=1
    python -m pipeline.critic data --out data/critic-vlm natural_per_task=1000 --teacher critic \\
        --teacher-config teacher.yaml        # teacher.yaml: {kind: critic, reward: {backend: openai, ...}}

`--policy` is the policy whose rollouts give the natural errors: `tiny` (the embedded default's warm-started
tiny policy) or a local checkpoint directory. Prints the manifest; exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.schema import ConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.critic data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, help="YAML CriticDataConfig")
    ap.add_argument("--teacher", choices=["structural", "critic"], help="who labels natural errors")
    ap.add_argument("--teacher-config", type=Path, help="YAML TeacherConfig (kind, reward, model_path)")
    ap.add_argument("--policy", default="tiny", help="policy for natural errors: tiny or a checkpoint dir")
    ap.add_argument("--models-cache", default=None, help="cache of tiny models (default: models.cache_dir)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="CriticDataConfig overrides, key.path=value")
    args = ap.parse_intermixed_args(argv)

    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset
    from pipeline.critic.training.dataset import CriticDataError
    from pipeline.critic.training.teachers import TeacherConfig
    from pipeline.models.config import ModelConfig, ModelsConfig
    from pipeline.schema import load_section

    overrides = list(args.overrides)
    try:
        if args.teacher_config:
            teacher = load_section(TeacherConfig, args.teacher_config)
            overrides += [f"teacher.kind={teacher.kind}", f"teacher.reward={json.dumps(teacher.reward)}",
                          f"teacher.model_path={json.dumps(teacher.model_path)}"]
        if args.teacher:
            overrides.append(f"teacher.kind={args.teacher}")
        cfg = load_section(CriticDataConfig, args.config, overrides)
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from pipeline.tiny import ensure_model, ensure_models

    models = ModelsConfig()
    if cfg.teacher.kind == "critic" and not cfg.teacher.model_path \
            and (cfg.teacher.reward or {}).get("backend", "hf") in ("hf", "vllm"):  # the default critic: tiny
        cfg.teacher.model_path = str(ensure_model(ModelConfig(), args.models_cache or models.cache_dir))
    if args.policy != "tiny":
        models = models.model_copy(update={"policy": ModelConfig(path=args.policy)})
    if args.models_cache:
        models = models.model_copy(update={"cache_dir": args.models_cache})
    try:
        if cfg.natural_per_task:
            models = ensure_models(models, reward=False)
        manifest = build_critic_dataset(cfg, args.out, models, progress=not args.no_progress)
    except (CriticDataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("rows", "total_rows", "teachers", "summaries", "seconds")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
