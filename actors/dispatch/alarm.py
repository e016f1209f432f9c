"""One timer for the Dispatcher: it fires once at the earliest time asked for (a run_at or a retry)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from procq.actors.job import parse_timestamp
from procq.actors.mailbox import report


class Alarm:
    """A plain object: only the Dispatcher's thread touches it. `fire` is sent from the timer's
    thread (a deferred message to the Dispatcher); the Dispatcher calls `rang` when it arrives."""

    def __init__(self, fire: Callable[[], object], now: Callable[[], datetime]) -> None:
        self._fire = fire
        self._now = now
        self._timer: threading.Timer | None = None
        self._due = ""

    def at(self, due: str) -> None:
        """Fire at `due` (a timestamp) unless an earlier firing is set: its pump asks for the next."""
        if self._timer is not None and self._due <= due:
            return
        self.cancel()
        self._due = due
        delay = max(0.0, (parse_timestamp(due) - self._now()).total_seconds())
        self._timer = threading.Timer(delay, report, args=(self._fire,))
        self._timer.daemon = True
        self._timer.start()

    def rang(self) -> None:
        self._timer = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
