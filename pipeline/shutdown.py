"""Signal handling for the driver: a first Ctrl-C / SIGTERM stops training cleanly, a second one aborts."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("pipeline")


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (`ray job stop`, Kubernetes) handling for `run`.

    Before training starts a signal aborts at once (KeyboardInterrupt; nothing to save). During training the
    first signal asks the loop to stop after the update in progress: the stream stops waiting, the final
    checkpoint is saved, the run exits with 128 + signal number (130 for SIGINT, 143 for SIGTERM, so shells and
    schedulers see an interrupted run, not a finished one). A second signal aborts (no checkpoint; the latest
    one stays valid, saves are atomic). During teardown signals are noted but never interrupt it, so actors and
    the local Ray cluster are always shut down.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self.aborted = False
        self._graceful = False
        self._teardown = False
        self._on_request = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "no signal"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the caller handles its own
        for sig in self.SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def begin_graceful(self, on_request) -> None:
        self._graceful, self._on_request = True, on_request
        if self.requested:  # a signal arrived while the stream was starting: stop now
            on_request()

    def begin_teardown(self) -> None:
        self._teardown = True

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._teardown:
            self.aborted = self.aborted or self.requested
            log.warning("%s during shutdown: already stopping", name)
            return
        if self.signum is None:
            self.signum = signum
            if self._graceful:
                log.warning("%s: stopping after the current update, then saving a checkpoint "
                            "(send it again to abort without saving)", name)
                self._on_request()
                return
        self.aborted = True
        raise KeyboardInterrupt(name)
