"""Run logging: console lines for a person watching, wandb for the record.

wandb runs offline by default (no account; files under <run_dir>/wandb, `wandb sync` uploads them later),
online when the user sets `logging.wandb.mode=online`, or not at all with `disabled`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.config import Config, ConfigError, config_to_dict

log = logging.getLogger("pipeline")


def setup_console_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def git_commit(repo: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class Tracker:
    """Console + wandb sink for scalars. One per run, owned by the driver."""

    def __init__(self, cfg: Config, run_dir: Path, commit: Optional[str] = None):
        self.run = None
        # A plain-JSON copy of every logged scalar, readable without wandb (reports, benchmarks).
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self._metrics_file = self.metrics_path.open("a", encoding="utf-8")
        wb = cfg.logging.wandb
        if wb.mode == "disabled":
            return
        if wb.mode == "online" and not _has_wandb_credentials():
            # wandb would otherwise stop and wait for an interactive login, which a Ray job never answers.
            raise ConfigError(
                "logging.wandb.mode=online needs credentials: set WANDB_API_KEY or run `wandb login`, "
                "or keep logging.wandb.mode=offline"
            )
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        config = config_to_dict(cfg)
        config["git_commit"] = commit
        self.run = wandb.init(
            project=wb.project,
            entity=wb.entity,
            name=cfg.run.name,
            tags=wb.tags,
            dir=str(run_dir),
            mode=wb.mode,
            config=config,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        log.info("wandb %s run %s in %s", wb.mode, self.run.id, self.run.dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        scalars = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        log.info("step %d %s", step, scalars)
        record = {"step": step, "time": time.time()}
        record.update({k: v for k, v in metrics.items()
                       if isinstance(v, (int, float)) and not (isinstance(v, float) and not math.isfinite(v))})
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, exit_code: int = 0) -> None:
        if not self._metrics_file.closed:
            self._metrics_file.close()
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
