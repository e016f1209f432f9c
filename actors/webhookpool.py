"""One bounded pool of threads for every webhook the server sends: completion, `start` and `logs`.

Each delivery is bounded by its deadline (actors/deadline.py), and every delivery runs on one of a
fixed number of threads, so however many receivers stall, the server's thread count stays the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("procq.webhook")


class WebhookPool:
    """`workers` threads (started as needed, then kept) running webhook attempts in submission order."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")

    def run(self, attempt: Callable[..., Any], *args: Any) -> None:
        """Queue one attempt; it runs when a thread is free. It must report its own outcome."""
        self._executor.submit(_logged, attempt, *args)

    def close(self) -> None:
        """Take no more attempts; queued ones still run, then the threads end."""
        self._executor.shutdown(wait=False)


def _logged(attempt: Callable[..., Any], *args: Any) -> None:
    try:
        attempt(*args)
    except Exception:  # a pool thread must survive any attempt
        log.exception("a webhook attempt failed unexpectedly")
