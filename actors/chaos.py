"""Fault injection for the driver: a thread that kills actors of the running pipeline (`chaos:` config).

Each kill is `ray.kill(handle, no_restart=True)` on a randomly chosen live actor of one kind — the same death a
spot-node loss or an OOM kill gives the driver. Kinds take turns; each is killed at most `chaos.kills_per_kind`
times; kills are `chaos.interval_s` apart, the first `chaos.first_after_s` after the stream starts. Nothing
here recovers anything: the pools and the driver must (actors/rollout.py, render_pool.py, reward.py, and the
trainer restart in pipeline/main.py). The record of what was killed, and when, is what the chaos test and
benchmarks/chaos.py compare with what the run says it survived.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from pipeline.config import ChaosConfig

log = logging.getLogger(__name__)

HandlesFn = Callable[[], list[Any]]  # the live actors of one kind, read at kill time (pools replace them)


class ChaosMonkey:
    def __init__(self, cfg: ChaosConfig, targets: dict[str, HandlesFn]):
        unknown = set(cfg.kinds) - set(targets)
        if unknown:
            raise ValueError(f"chaos.kinds {sorted(unknown)} not among {sorted(targets)}")
        self.cfg = cfg
        self.targets = {kind: targets[kind] for kind in cfg.kinds}
        self.kills: list[dict[str, Any]] = []  # {"kind", "index", "at_s"}
        self._rng = random.Random(cfg.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._started = 0.0

    def start(self) -> ChaosMonkey:
        self._started = time.monotonic()
        if self.targets:
            self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """No more kills (the driver calls this before its final save and evaluation). Returns the record."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        return list(self.kills)

    def counts(self) -> dict[str, int]:
        return {kind: sum(k["kind"] == kind for k in self.kills) for kind in self.cfg.kinds}

    def _run(self) -> None:
        budget = {kind: self.cfg.kills_per_kind for kind in self.targets}
        order = list(self.targets)
        self._rng.shuffle(order)
        if self._stop.wait(self.cfg.first_after_s):
            return
        while not self._stop.is_set() and any(budget.values()):
            kind = next(k for k in order if budget[k])
            order.append(order.pop(order.index(kind)))  # round robin over the kinds with kills left
            handles = self.targets[kind]()
            if handles:
                index = self._rng.randrange(len(handles))
                try:
                    ray.kill(handles[index], no_restart=True)
                    budget[kind] -= 1
                    self.kills.append({"kind": kind, "index": index, "at_s": time.monotonic() - self._started})
                    log.warning("chaos: killed %s actor %d (%d left of this kind)", kind, index, budget[kind])
                except Exception as e:  # noqa: BLE001 - already dead: a pool is replacing it; try again later
                    log.info("chaos: could not kill %s actor %d: %s", kind, index, e)
            self._stop.wait(self.cfg.interval_s)
