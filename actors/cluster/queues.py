"""Queues across the cluster: a queue's parallelism and pause live in the `queues` table, which every
node's claim reads (actors/cluster/claim.py), so they hold cluster-wide; and the dependents of a job
that did not complete, found in the database wherever they were submitted."""

from __future__ import annotations

from typing import Any

from procq.actors.job import DEFAULT_QUEUE, Job
from procq.actors.store import schema

SET = """INSERT INTO queues (name, parallelism, paused) VALUES (%(name)s, %(parallelism)s, coalesce(%(paused)s, false))
    ON CONFLICT (name) DO UPDATE SET parallelism = coalesce(%(parallelism)s, queues.parallelism),
        paused = coalesce(%(paused)s, queues.paused)"""
VIEWS = """WITH names AS (
        SELECT name FROM queues UNION SELECT %(default)s
        UNION SELECT DISTINCT queue FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS'))
    SELECT n.name, q.parallelism, coalesce(q.paused, false),
        (SELECT count(*) FROM jobs WHERE status = 'IN_QUEUE' AND queue = n.name),
        (SELECT count(*) FROM jobs WHERE status = 'IN_PROGRESS' AND queue = n.name)
    FROM names n LEFT JOIN queues q ON q.name = n.name ORDER BY n.name"""
QUEUED = "SELECT count(*) FROM jobs WHERE status = 'IN_QUEUE'"  # read from the partial index of queued rows
SLOTS = "SELECT coalesce(sum(slots), 0) FROM nodes WHERE state = 'up'"
WAITING_FOR = """SELECT body FROM jobs WHERE status = 'IN_QUEUE' AND has_after AND body->'after' ? %s ORDER BY id"""


def configure(conn: Any, name: str, parallelism: int | None = None, paused: bool | None = None) -> None:
    """Change (or create) a queue for every node; None leaves a setting as it is."""
    conn.execute(SET, {"name": name, "parallelism": parallelism, "paused": paused})


def views(conn: Any) -> list[dict[str, Any]]:
    """GET /queues for the cluster: a queue without a limit of its own may use every up node's slots."""
    slots = max(1, conn.execute(SLOTS).fetchone()[0])
    return [
        {"name": name, "parallelism": parallelism or slots, "paused": paused, "queued": queued, "running": running}
        for name, parallelism, paused, queued, running in conn.execute(VIEWS, {"default": DEFAULT_QUEUE})
    ]


def queued(conn: Any) -> int:
    """The whole cluster's queued jobs (--max-queued bounds them)."""
    return conn.execute(QUEUED).fetchone()[0]


def waiting_for(conn: Any, job_id: str) -> list[Job]:
    """The queued jobs that name `job_id` in their `after`."""
    return [schema.decode(row[0]) for row in conn.execute(WAITING_FOR, (job_id,))]
