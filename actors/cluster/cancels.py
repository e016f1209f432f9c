"""Cancel through any node: a request row for the node that runs the job, and a hint to it; that node
ends the tree and answers the row; the node that took the HTTP request answers 200 once it sees that."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from procq.actors.cluster.hints import CANCELS

REQUEST = """INSERT INTO cancels (job_id, node, lease)
    SELECT id, node, lease FROM jobs WHERE id = %s AND status = 'IN_PROGRESS' AND node IS NOT NULL
    ON CONFLICT (job_id) DO UPDATE SET node = excluded.node, lease = excluded.lease, requested_at = now(),
        done_at = NULL
    RETURNING node"""
PENDING = "SELECT job_id, lease FROM cancels WHERE node = %s AND done_at IS NULL ORDER BY requested_at"
ANSWER = "UPDATE cancels SET done_at = now() WHERE job_id = %s AND done_at IS NULL"
DONE = "SELECT done_at IS NOT NULL FROM cancels WHERE job_id = %s"


def request(conn: Any, job_id: str) -> str | None:
    """Ask the node running `job_id` to cancel it. Returns that node, or None if the job is not running."""
    with conn.transaction():
        row = conn.execute(REQUEST, (job_id,)).fetchone()
        if row is not None:  # delivered with the commit: the owner looks at its requests at once
            conn.execute("SELECT pg_notify(%s, %s)", (CANCELS, row[0]))
    return row[0] if row else None


def pending(conn: Any, node: str) -> list[tuple[str, int]]:
    """The (job id, lease) of every unanswered cancel for `node` (it checks the lease is still its own)."""
    return conn.execute(PENDING, (node,)).fetchall()


def answer(conn: Any, job_id: str) -> None:
    """The job's tree is gone."""
    conn.execute(ANSWER, (job_id,))


def wait_answered(conn: Any, job_id: str, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Poll until the owner answered (True) or `timeout_s` passed (False)."""
    end = clock() + timeout_s
    while True:
        row = conn.execute(DONE, (job_id,)).fetchone()
        if row is not None and row[0]:
            return True
        if clock() >= end:
            return False
        time.sleep(0.05)
