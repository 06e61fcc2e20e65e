"""SIGINT and SIGTERM during a run: they raise ``core.errors.Interrupted`` in the driver, so
the run stops the way a failure does (its workers closed, its staging kept for ``--resume``)
and its ``runs`` row says ``interrupted``, not ``running``.

While the run writes its opening row and while it closes (workers stopping, the closing row
being written), a signal is held, not raised, so the run cannot be left half-recorded; one
that came while held is raised when the hold ends (at the start of the work) or dropped (the
run is already ending). Python runs signal handlers in the main thread only, so off it (a
scheduler's worker thread) nothing is installed.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from core.errors import Interrupted

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stops:
    """The run's signal state: raise at once, or hold until ``release``."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.holding:
            raise Interrupted(signum)
        if self.pending is None:
            self.pending = signum
        name = signal.Signals(signum).name
        logger.warning("%s: the run stops once its runs row is written", name)

    def hold(self) -> None:
        """Hold signals from now on (raised by ``release``)."""
        self.holding = True

    def release(self) -> None:
        """Raise a signal that came while held; raise later ones at once."""
        self.holding = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[Stops]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside; the previous handlers come back after."""
    stops = Stops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {sig: signal.signal(sig, stops.handle) for sig in SIGNALS}
    try:
        yield stops
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
