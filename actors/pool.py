"""The scaffolding every actor pool shares: spawn N actors from a factory, wait until they answer `ready()`,
replace one that died or hung — by identity, once however many callers noticed, within a budget.

The rollout, render and reward pools (rollout.py, render_pool.py, reward.py) each hold one `ActorSlots` and
keep only what differs between them: what counts as a failure, what is resent, what a successor must do
before it serves, and what happens when the budget is spent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import ray

log = logging.getLogger(__name__)


class ActorStartError(RuntimeError):
    """Actors did not answer `ready()` within their start timeout."""


class ReplacementBudgetSpent(RuntimeError):
    """An actor failed and its pool may replace no more; the slot (`index`) keeps the failed actor."""

    def __init__(self, what: str, index: int, budget: int):
        super().__init__(f"{what} {index}: the replacement budget ({budget}) is spent")
        self.index = index


class Successor(NamedTuple):
    index: int  # the slot it took
    serial: int  # what the factory was given
    handle: Any


def wait_ready(handles: list, what: str, timeout_s: float) -> list:
    """Every actor's `ready()` answer, in order. ActorStartError names the group and the slots that did not
    answer in time; an actor whose constructor raised raises its RayActorError."""
    refs = [h.ready.remote() for h in handles]
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        _, late = ray.wait(refs, num_returns=len(refs), timeout=0)
        slots = sorted(refs.index(ref) for ref in late)
        raise ActorStartError(
            f"{what}: {len(slots)} actor(s) of {len(refs)} not ready after {timeout_s:g} s (slot(s) {slots}; "
            "resources taken by another job, or a slow model load: raise ray.actor_start_timeout_s)") from None


def kill_quietly(handle) -> None:
    """ray.kill for an actor that may already be dead."""
    try:
        ray.kill(handle, no_restart=True)
    except Exception as e:  # noqa: BLE001 - gone already: nothing to kill
        log.debug("killing an actor failed: %s: %s", type(e).__name__, e)


class ActorSlots:
    """`size` actors of one kind in numbered slots, made by `spawn(serial)`; the constructor waits until all
    answer `ready()` (their answers: `ready_answers`). `serial` counts every spawn over the pool's life,
    replacements included (a fresh seed, a replica id).

    Thread-safe: `lock` (re-entrant) guards the slots and `replacements`; a pool may hold it around its own
    checks so that they and a replacement are one decision. `handles` is the live list, slot by slot.
    """

    def __init__(self, what: str, spawn: Callable[[int], Any], size: int, start_timeout_s: float,
                 max_replacements: int | None = None):
        self.what = what  # "rollout worker": names the actors in errors and logs
        self.start_timeout_s = start_timeout_s
        self.max_replacements = max_replacements  # None: unbounded
        self.lock = threading.RLock()
        self.replacements = 0
        self._spawn = spawn
        self._spawned = 0
        self.handles: list = []
        self.serials: list[int] = []
        for _ in range(size):
            serial, handle = self._new()
            self.handles.append(handle)
            self.serials.append(serial)
        try:
            self.ready_answers = wait_ready(self.handles, what, start_timeout_s)
        except BaseException:
            self.shutdown()  # half a pool holds resources nobody will use
            raise

    def _new(self) -> tuple[int, Any]:
        serial = self._spawned
        self._spawned += 1
        return serial, self._spawn(serial)

    def live(self) -> list:
        with self.lock:
            return list(self.handles)

    def index(self, handle) -> int | None:
        """The slot holding `handle` (actor identity), or None: replaced, retired, or the pool shut down."""
        with self.lock:
            return next((i for i, h in enumerate(self.handles) if h == handle), None)

    def replace(self, dead, prepare: Callable[[Any], None] | None = None) -> Successor | None:
        """Kill `dead` and spawn its successor into its slot, if a slot still holds it: the first caller
        replaces, later callers that noticed the same failure get None.

        `prepare(new)` runs under the lock before the successor takes the slot (callers of `replace` wait
        meanwhile): what must happen before anyone may call it; if it raises, the successor is killed and the
        slot keeps `dead`. Without it the successor takes the slot at once, still starting (calls to it queue;
        `started` waits for it). Past the budget: ReplacementBudgetSpent, and nothing is killed.
        """
        with self.lock:
            index = self.index(dead)
            if index is None:
                return None
            if self.max_replacements is not None and self.replacements >= self.max_replacements:
                raise ReplacementBudgetSpent(self.what, index, self.max_replacements)
            self.replacements += 1
            kill_quietly(dead)
            serial, new = self._new()
            if prepare is not None:
                try:
                    prepare(new)
                except BaseException:
                    kill_quietly(new)  # it never served
                    raise
            self.handles[index], self.serials[index] = new, serial
            return Successor(index, serial, new)

    def started(self, new) -> bool:
        """Wait for a successor that took its slot still starting; False (logged) if it did not come up —
        the pool decides what then."""
        try:
            wait_ready([new], self.what, self.start_timeout_s)
            return True
        except Exception as e:  # noqa: BLE001 - timed out, or died in its constructor: reported, not raised
            log.error("replacement %s (slot %s) did not start: %s: %s", self.what, self.index(new),
                      type(e).__name__, e)
            return False

    async def started_async(self, new) -> bool:
        """`started` for an asyncio caller."""
        try:
            await asyncio.wait_for(new.ready.remote(), timeout=self.start_timeout_s)
            return True
        except Exception as e:  # noqa: BLE001
            log.error("replacement %s (slot %s) did not start: %s: %s", self.what, self.index(new),
                      type(e).__name__, e)
            return False

    def retire(self, handle) -> bool:
        """Take `handle`'s slot out of the pool (the pool shrinks) and kill it. False if no slot holds it."""
        with self.lock:
            index = self.index(handle)
            if index is None:
                return False
            del self.handles[index], self.serials[index]
        kill_quietly(handle)
        return True

    def shutdown(self, close: Callable[[Any], None] | None = None) -> None:
        """Empty the pool; each actor gets `close(handle)` first (best effort), then is killed."""
        with self.lock:
            handles, self.handles, self.serials = self.handles, [], []
        for handle in handles:
            if close is not None:
                try:
                    close(handle)
                except Exception as e:  # noqa: BLE001 - it may be dead or hung: killed below anyway
                    log.debug("closing a %s failed: %s: %s", self.what, type(e).__name__, e)
            kill_quietly(handle)
