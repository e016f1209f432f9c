"""What the keeper's exit record of a run says, in the Supervisor's terms: code, end time, usage, words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from procq.actors.job import Job, Usage, parse_timestamp


def start_error(job: Job, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"could not start {job.args[0]!r}: {exc.strerror or exc}"
    return str(exc)


def exit_code(record: dict[str, Any]) -> int:
    return int(record["exit_code"])


def ended_at(record: dict[str, Any], now: Callable[[], datetime]) -> datetime:
    try:
        return parse_timestamp(str(record["ended_at"]))
    except (KeyError, ValueError):
        return now()


def usage_of(record: dict[str, Any]) -> Usage:
    """The run's usage as the keeper saw it when reaping it (its own, not the spawner's image)."""
    usage = record.get("usage") or {}
    return Usage(usage.get("cpu_user_s") or 0.0, usage.get("cpu_system_s") or 0.0, usage.get("peak_rss_bytes") or 0)


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the command was ended by signal {-code}"
    return f"the command exited with code {code}"
