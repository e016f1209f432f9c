"""The claimer: one thread that claims jobs for the Dispatcher, so the Dispatcher's thread never waits
on the database (a cut network holds a claim for seconds; API answers must not wait with it).

The Dispatcher asks (`ask`) with what its free slots and units can run, at most one claim at a time,
and hears of what was claimed as a message (`deliver`), never by waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping

import pykka

from procq.actors.cluster.claim import Claimed

log = logging.getLogger("procq.cluster")

Claim = Callable[[int, Mapping[str, int]], list[Claimed]]


class Claimer:
    def __init__(
        self, claim: Claim, deliver: Callable[[list[Claimed]], None], put_back: Callable[[list[Claimed]], None]
    ) -> None:
        self._claim = claim
        self._deliver = deliver  # the Dispatcher's message: called on this thread, must only tell
        self._put_back = put_back  # for claims the Dispatcher can no longer hear of (it stopped)
        self._asks: queue.SimpleQueue[tuple[int, dict[str, int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="claimer", daemon=True)
        self._thread.start()

    def ask(self, slots: int, free: Mapping[str, int]) -> None:
        """Claim up to `slots` jobs fitting `free` units; the answer comes through `deliver`."""
        self._asks.put((slots, dict(free)))

    def stop(self) -> None:
        self._asks.put(None)
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while (ask := self._asks.get()) is not None:
            try:
                claimed = self._claim(*ask)
            except Exception:  # the claimer must live on: the Dispatcher waits for an answer to ask again
                log.exception("claiming jobs failed")
                claimed = []
            try:
                self._deliver(claimed)
            except pykka.ActorDeadError:
                self._put_back(claimed)
