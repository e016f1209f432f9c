"""A finished job's output kept in PostgreSQL, up to a cap (--cluster-output-cap, 8 MiB by default), so
any node can serve it when the node that ran the job is gone; beyond the cap only a prefix is kept and
the caller answers 503 naming the node to bring back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CAP = 8 * 1024 * 1024
STREAMS = ("stdout.txt", "stderr.txt")  # the result and the log, as named in the job's directory

KEEP = """INSERT INTO outputs (job_id, stream, data, size, complete) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (job_id, stream) DO UPDATE SET data = excluded.data, size = excluded.size,
        complete = excluded.complete"""
READ = "SELECT data, size, complete FROM outputs WHERE job_id = %s AND stream = %s"


@dataclass(frozen=True, slots=True)
class Kept:
    data: bytes  # the whole output, or its first `cap` bytes
    size: int  # the output's full size
    complete: bool  # data is the whole output


def keep(conn: Any, job_id: str, stream: str, path: Path, cap: int = DEFAULT_CAP) -> Kept:
    """Copy a finished job's `stream` (stdout or stderr) from `path` into the database. Raises OSError."""
    with open(path, "rb") as handle:
        data = handle.read(cap)
        size = handle.seek(0, 2)
    kept = Kept(data, size, size <= cap)
    conn.execute(KEEP, (job_id, stream, kept.data, kept.size, kept.complete))
    return kept


def read(conn: Any, job_id: str, stream: str) -> Kept | None:
    row = conn.execute(READ, (job_id, stream), binary=True).fetchone()  # bytea as it is, not as hex text
    return Kept(bytes(row[0]), row[1], row[2]) if row else None
