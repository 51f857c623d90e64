"""The `stream:` section: how far rollouts run ahead of the trainer, chunk and queue sizes, stage threads."""

from __future__ import annotations

from pydantic import Field

from pipeline.schema import Strict


class StreamConfig(Strict):
    # Rollouts may run this many policy versions ahead of the trainer; 0 = synchronous (generate, then train).
    max_staleness: int = Field(1, ge=0)
    chunk_size: int = Field(4, ge=1)  # samples handed from stage to stage at a time
    queue_size: int = Field(8, ge=1)  # chunks waiting between two stages (backpressure beyond that)
    render_threads: int = Field(2, ge=1)  # concurrent render calls from the driver
    reward_threads: int = Field(1, ge=1)
    step_timeout_s: float = Field(1800.0, gt=0)  # one step's groups must complete within this
