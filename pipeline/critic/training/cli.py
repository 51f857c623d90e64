"""python -m pipeline.critic train [--config CRITIC_TRAIN.yaml] [--local] [key.path=value ...]

Supervised fine-tuning of a critic with DeepSpeed on a critic SFT set (`python -m pipeline.critic data`).
By default the ranks run as Ray actors (`actors/critic_trainer.py`: $RAY_ADDRESS or a running cluster, else
a local one, as `ray job submit` would give); `--local` runs one rank in a subprocess, without Ray. Examples:

    python -m pipeline.critic train data=data/critic-train steps=600 output_dir=runs/critic-tiny
    python -m pipeline.critic train --config configs/critic/tiny.yaml ranks=2 deepspeed.zero_stage=2
    ray job submit -- python -m pipeline.critic train --config configs/critic/gpu-8b.yaml

Writes `output_dir/metrics.jsonl`, DeepSpeed checkpoints under `output_dir/checkpoints` (resume=true picks
the newest) and the Hugging Face checkpoint `output_dir/final`, which every critic backend loads by path
(`models.reward.path=.../final`). Prints the summary; exit 0 trained, 2 bad config or data, 1 failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.schema import ConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.critic train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML CriticTrainConfig (pipeline/critic/training/config.py)")
    ap.add_argument("--local", action="store_true", help="one rank in a subprocess, no Ray")
    ap.add_argument("overrides", nargs="*", help="key.path=value")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    from pipeline.critic.training.config import load_train_config
    from pipeline.critic.training.dataset import CriticDataError

    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        from pipeline.tiny import ensure_model  # the base model: built here if tiny, before any rank starts

        cfg.model = cfg.model.model_copy(update={"path": str(ensure_model(cfg.model, cfg.cache_dir))})
        if args.local:
            if cfg.ranks != 1:
                print("config error: --local runs one rank; drop it or set ranks=1", file=sys.stderr)
                return 2
            from pipeline.critic.training.launch import train_local

            summary = train_local(cfg)
        else:
            summary = _on_ray(cfg)
    except (CriticDataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {k: v for k, v in summary.items() if k != "losses"}
    print(json.dumps(out, indent=2, default=str))
    return 0


def _on_ray(cfg) -> dict:
    # The Ray wiring lives in actors/ (pipeline/ stays Ray-free); this only starts and stops the connection.
    import ray

    from actors.critic_trainer import train_on_ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=True)
    try:
        return train_on_ray(cfg)
    finally:
        if started:
            ray.shutdown()
