"""Exit records: jobs/<id>/exit.json, how one attempt ended, written by the keeper before it tells anyone.

Written atomically (tmp file, fsync, rename, fsync of the directory), so a reader sees a whole record
or the previous one. A record names its attempt: a record of an earlier attempt says nothing about
the current one.
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


def write(job_dir: Path, record: dict[str, Any]) -> None:
    """Replace jobs/<id>/exit.json with `record`, durably. Raises OSError."""
    data = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
    tmp = job_dir / f"{EXIT_RECORD}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        osdeps.replace_file(tmp, job_dir / EXIT_RECORD)
        osdeps.fsync_dir(job_dir)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


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
