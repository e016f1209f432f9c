"""Exit records: jobs/<id>/exit.json, how one attempt ended, written by the keeper before it tells anyone.

Written atomically (tmp file, rename), so a reader sees a whole record or the previous one, then
made durable (fsync of the file and the directory) after the keeper has told the server: a crash of
any process keeps it (it is in the page cache); only a power loss right after the end can lose it,
and a lost record makes the run count as lost (run again, or FAILED with the reason), never as an
exit code nobody saw. A record names its attempt: an earlier attempt's says nothing about this one.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procq.actors import osdeps

EXIT_RECORD = "exit.json"


def now_iso() -> str:
    """The time now as the API writes it (ISO 8601 UTC with a Z)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write(job_dir: Path, record: dict[str, Any], durable: bool = True) -> None:
    """Replace jobs/<id>/exit.json with `record` atomically; durably too unless `durable` is False
    (then call sync). Raises OSError."""
    data = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
    tmp = job_dir / f"{EXIT_RECORD}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        osdeps.replace_file(tmp, job_dir / EXIT_RECORD)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        sync(job_dir)


def sync(job_dir: Path) -> None:
    """Make the exit record in `job_dir` durable: the file, then its name. Raises OSError."""
    fd = os.open(job_dir / EXIT_RECORD, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    osdeps.fsync_dir(job_dir)


def read(job_dir: Path, attempt: int | None = None) -> dict[str, Any] | None:
    """The exit record in `job_dir` (of `attempt`, if given), or None if there is none (or another
    attempt's, or an unreadable one: a record is written whole or not at all)."""
    try:
        record = json.loads(osdeps.read_bytes(job_dir / EXIT_RECORD))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (attempt is not None and record.get("attempt") != attempt):
        return None
    return record
