"""Retention in a cluster: which finished jobs' rows a node deletes, and the directories a node holds of
jobs gone from the database.

The rule: a finished job's row is deleted by the node its row names (the node that ran it, which holds
its files, or for a job that never ran the node that ended it), by any node for a row that names none,
and by any node once the node it names is gone (left or lost: its output is in the database; if it
comes back, its start removes the directories of jobs deleted meanwhile).
Other nodes may hold a directory of the job too (the node that accepted it, one that recorded a change
to it): each node's retention sweep removes its own directories of jobs no longer in the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from procq.actors import osdeps
from procq.actors.job import Job, is_job_id
from procq.actors.store.files import META

EXPIRED = """SELECT j.body FROM jobs j LEFT JOIN nodes n ON n.name = j.node
    WHERE j.completed_at IS NOT NULL AND j.completed_at < %(cutoff)s AND j.owed = 0
      AND j.status IN ('COMPLETED', 'FAILED', 'CANCELED')
      AND (j.node IS NULL OR j.node = %(me)s OR n.state IS DISTINCT FROM 'up')
    ORDER BY j.completed_at LIMIT %(n)s"""
KNOWN = "SELECT id FROM jobs WHERE id = ANY(%s)"
BATCH = 1000


def expired(conn: Any, me: str, cutoff: str, limit: int) -> list[bytes]:
    """The bodies of up to `limit` finished jobs completed before `cutoff` whose rows `me` may delete."""
    return [body for (body,) in conn.execute(EXPIRED, {"cutoff": cutoff, "me": me, "n": limit})]


def leftovers(conn: Any, jobs_dir: Path) -> list[Job]:
    """This node's job directories whose job is no longer in the database (another node deleted it:
    only finished jobs are deleted), each as its meta.json says (one without a readable meta.json is
    left alone). A new job's directory appears only after its row is committed, so none is taken here."""
    names = [
        entry.name for entry in os.scandir(jobs_dir) if is_job_id(entry.name) and entry.is_dir(follow_symlinks=False)
    ]
    gone: list[Job] = []
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        known = {job_id for (job_id,) in conn.execute(KNOWN, (chunk,))}
        for job_id in chunk:
            if job_id in known:
                continue
            try:
                gone.append(Job.from_dict(orjson.loads(osdeps.read_bytes(str(jobs_dir / job_id / META)))))
            except (OSError, ValueError, TypeError, KeyError):
                continue
    return gone
