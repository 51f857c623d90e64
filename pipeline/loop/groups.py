"""GRPO group assembly: a group goes to the trainer only when every one of its samples is accounted for.

Samples finish out of order (rendering and scoring run concurrently across actors); advantages are computed
within a group, so a partial group must never reach the trainer, and a sample must never be lost on the way.
"""

from __future__ import annotations

from typing import Optional

from pipeline.sample import Sample


class GroupAssembler:
    def __init__(self) -> None:
        self._expected: dict[str, int] = {}
        self._arrived: dict[str, list[Sample]] = {}

    def expect(self, prompt_id: str, size: int) -> None:
        """Announce a group before its samples arrive (rollouts know the group size up front)."""
        if prompt_id in self._expected:
            raise ValueError(f"group {prompt_id!r} is already open")
        if size < 1:
            raise ValueError(f"group {prompt_id!r}: size must be >= 1, got {size}")
        self._expected[prompt_id] = size
        self._arrived[prompt_id] = []

    def add(self, sample: Sample) -> Optional[list[Sample]]:
        """Record one finished sample (scored, or failed with a reason); return its group once complete."""
        members = self._arrived.get(sample.prompt_id)
        if members is None:
            raise KeyError(f"sample {sample.uid} belongs to unknown group {sample.prompt_id!r}")
        if any(m.uid == sample.uid for m in members):
            raise ValueError(f"sample {sample.uid} arrived twice in group {sample.prompt_id!r}")
        members.append(sample)
        if len(members) < self._expected[sample.prompt_id]:
            return None
        del self._expected[sample.prompt_id]
        return self._arrived.pop(sample.prompt_id)

    @property
    def open_groups(self) -> int:
        return len(self._expected)

    @property
    def waiting_samples(self) -> int:
        """Samples still in flight for open groups (announced minus arrived)."""
        return sum(self._expected[p] - len(self._arrived[p]) for p in self._expected)
