"""What every OS-specific module here shares: which OS this is, and retrying what Windows refuses for a moment."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from procq.actors import backoff

WINDOWS = os.name == "nt"


log = logging.getLogger("procq.osdeps")


T = TypeVar("T")


_TRANSIENT_WINERRORS = (5, 32)  # access denied, sharing violation: someone holds the file open


_CTIME_TOLERANCE_S = 0.01  # create_time is a float; rounding differs between psutil calls


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied as exc:
        log.warning("access denied while ending a job's process: %s", exc)


def is_transient(exc: OSError, windows: bool = WINDOWS) -> bool:
    """True for errors that pass when another handle on the file closes (Windows only)."""
    return windows and getattr(exc, "winerror", None) in _TRANSIENT_WINERRORS


def retry_transient(
    action: Callable[[], T],
    windows: bool = WINDOWS,
    sleep: Callable[[float], None] = time.sleep,
    budget_s: float = 2.0,
    first_s: float = 0.001,
    max_s: float = 0.1,
) -> T:
    """Run `action`, retrying while Windows reports a file as in use (another handle on it closes soon);
    gives up after `budget_s` seconds of waiting. Any other error is raised at once."""
    transient = lambda exc: isinstance(exc, OSError) and is_transient(exc, windows)  # noqa: E731
    return backoff.retry(action, transient, budget_s, first_s, max_s, sleep)
