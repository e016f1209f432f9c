"""The lease sweep, run by every node about once a second: a node whose lease ran out is lost, and each
of its running jobs runs again elsewhere (its lost run counted among its attempts) or, with no attempt
left, FAILS saying which node was lost. The database's clock decides; the sweep touches only running
rows (a partial index), and each row it changes carries the lease it found, so a row a live node just
finished is never overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from procq.actors.job import Job, Status
from procq.actors.store import schema
from procq.actors.transitions import failed_without_running

log = logging.getLogger("procq.cluster")

LOSE_NODES = "UPDATE nodes SET state = 'lost' WHERE state = 'up' AND lease_until < now() RETURNING name"
ORPHANS = """SELECT j.id, j.lease, j.node, j.body,
        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    FROM jobs j JOIN nodes n ON n.name = j.node
    WHERE j.status = 'IN_PROGRESS' AND n.lease_until < now()
    ORDER BY j.id LIMIT %s FOR UPDATE OF j SKIP LOCKED"""
SETTLE = """UPDATE jobs SET status = %s, completed_at = %s, owed = %s, body = %s, lease = NULL, synced = 0
    WHERE id = %s AND lease = %s"""


@dataclass(frozen=True, slots=True)
class Settled:
    job: Job  # IN_QUEUE again (to run elsewhere) or FAILED
    node: str  # the lost node it ran on


def after_loss(job: Job, node: str, now: str) -> Job:
    """What becomes of a run its node lost: another attempt while attempts remain, else FAILED."""
    reason = f"node {node} stopped renewing its lease while the job ran (the node died or lost the database)"
    if job.attempts < job.max_attempts:
        return dataclasses.replace(
            job, status=Status.IN_QUEUE, pid=None, pid_started_at=None, started_at=None, interrupted=reason
        )
    return failed_without_running(dataclasses.replace(job, pid=None, pid_started_at=None), reason, now)


def sweep(conn: Any, limit: int = 1_000) -> list[Settled]:
    """One pass, in one transaction on `conn` (autocommit): mark lapsed nodes lost, settle up to
    `limit` of the runs they held. Returns what it settled (the caller wakes claimers with a hint)."""
    settled: list[Settled] = []
    with conn.transaction():
        for (name,) in conn.execute(LOSE_NODES).fetchall():
            log.warning("node %s: lost (its lease ran out); its jobs run elsewhere or fail", name)
        rows = conn.execute(ORPHANS, (limit,)).fetchall()
        changes = []
        for job_id, lease, node, body, now in rows:
            job = after_loss(schema.decode(body), node, now)
            encoded = schema.encode(job).decode()
            changes.append((job.status.value, job.completed_at, schema.owes_webhook(job), encoded, job_id, lease))
            settled.append(Settled(job, node))
        if changes:
            with conn.cursor() as cur:
                cur.executemany(SETTLE, changes)
    return settled
