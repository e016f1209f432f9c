"""Backoff: the one formula for waits between attempts, and the one loop that retries transient failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def exponential(base_s: float, failures: int, cap_s: float, jitter: Callable[[], float] | None = None) -> float:
    """The wait after failure number `failures`: base * 2**(failures-1), at most `cap_s`. With `jitter`
    (a random 0..1 source) it is scaled by 0.5..1.0, so things that failed together do not all come
    back at the same instant."""
    delay = min(cap_s, base_s * 2 ** (failures - 1))
    return delay if jitter is None else delay * (0.5 + jitter() / 2)


def retry(
    action: Callable[[], T],
    transient: Callable[[Exception], bool],
    budget_s: float,
    first_s: float,
    max_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`; while it raises an error `transient` accepts, sleep (first_s, doubling up to max_s)
    and run it again, until `budget_s` seconds of sleep are spent. Then, or for any other error, raises."""
    delay, spent = first_s, 0.0
    while True:
        try:
            return action()
        except Exception as exc:
            if not transient(exc) or spent >= budget_s:
                raise
        sleep(delay)
        spent += delay
        delay = min(delay * 2, max_s)
