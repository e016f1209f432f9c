"""The keeper's fence (cluster mode): no run outlives the lease of the node whose server asked for it.

A cluster node's server tells its keeper, with each renewal of its lease, until when that lease surely
holds (`fence {within_s, grace_s}`). If that moment passes without a newer one (the server was killed,
or is cut off from the database), the keeper ends every run it holds, with the short fence grace, and
keeps ending any run started after it, so none survives into the time another node may claim the job.
Their exit records say `stopped: "fenced"`. Never armed on a single machine: nobody sends a fence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("procq.keeper")

FENCED = "fenced"  # the stop reason in the exit record of a run the fence ended
_CHECK_S = 0.05


class Fence:
    """Armed by the first `arm`; `end_all(grace_s, reason)` is called every check while the deadline
    has passed (it must be cheap for runs already being ended)."""

    def __init__(self, end_all: Callable[[float, str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._end_all = end_all
        self._clock = clock
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._grace_s = 0.0
        self._fired = False
        threading.Thread(target=self._watch, daemon=True, name="fence").start()

    def arm(self, within_s: float | None, grace_s: float) -> None:
        """The server's lease holds `within_s` seconds from now (counted from when it was sent); None
        lifts the fence (a single machine's server: no lease)."""
        with self._lock:
            if within_s is None:
                self._deadline, self._fired = None, False
                return
            self._deadline = self._clock() + within_s
            self._grace_s = grace_s
            if self._fired and within_s > 0:
                log.warning("fence: the server renewed its lease again; runs are kept from now on")
                self._fired = False

    def passed(self) -> bool:
        with self._lock:
            return self._deadline is not None and self._clock() >= self._deadline

    def _watch(self) -> None:
        while True:
            time.sleep(_CHECK_S)
            with self._lock:
                due = self._deadline is not None and self._clock() >= self._deadline
                grace = self._grace_s
                first = due and not self._fired
                self._fired = self._fired or due
            if first:
                log.error("fence: the server's lease was not renewed in time; ending every run it held")
            if due:
                try:
                    self._end_all(grace, FENCED)
                except Exception:  # the watch must live on
                    log.exception("fence: ending the runs failed")
