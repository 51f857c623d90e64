"""The `logging:` section: log level, progress display and wandb (mode, project, sample tables)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from pipeline.schema import Strict


class WandbConfig(Strict):
    # offline needs no account; `online` needs WANDB_API_KEY (or `wandb login`); `disabled` turns it off.
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "visual-erm-rl"
    entity: Optional[str] = None
    tags: list[str] = []
    # Every N steps (and at the last step) a table of sample rows goes to wandb and to <run_dir>/samples/
    # (the HTML report's gallery); 0: never. Rows per task: the best, the worst and a few drawn at random.
    table_every_steps: int = Field(10, ge=0)
    table_best_per_task: int = Field(1, ge=0)
    table_worst_per_task: int = Field(1, ge=0)
    table_random_per_task: int = Field(1, ge=0)
    table_image_max_side: int = Field(256, ge=16)  # images are downscaled to this: the tables stay small
    table_code_max_chars: int = Field(4000, ge=0)  # longer code is cut, with a marker


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Every step logs one compact INFO line (step i/N, reward, samples/s, step time, ETA; the full scalar
    # record is at DEBUG, in metrics.jsonl and wandb). "auto" also draws a live tqdm bar when stderr is a
    # terminal (not in `ray job submit` logs); "bar" always draws it, "line" never.
    progress: Literal["auto", "bar", "line"] = "auto"
    wandb: WandbConfig = WandbConfig()
