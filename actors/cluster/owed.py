"""Webhooks a gone node owed: a finished job whose completion webhook its node had not delivered when
it was lost (or left), or that the lease sweep ended FAILED, is adopted by one live node, which
delivers it. One statement moves the debt (the row's `node`), so in the normal case one node delivers
it once; a node that dies before it has delivered is gone in turn, and the next live node adopts the
debt again: at least once across crashes, as the contract says.

A job that never ran (canceled while queued, failed by its dependency) owes its webhook to the node
that ended it: its row names that node (actors/store/pgschema.UPDATE_JOB), so it is adopted the same way.
"""

from __future__ import annotations

from typing import Any

from procq.actors.job import Job
from procq.actors.store import schema

ADOPT = """UPDATE jobs SET node = %(me)s
FROM (
    SELECT j.id FROM jobs j JOIN nodes n ON n.name = j.node
    WHERE j.owed = 1 AND j.node <> %(me)s AND (n.state <> 'up' OR n.lease_until < now())
    ORDER BY j.id LIMIT %(n)s
    FOR UPDATE OF j SKIP LOCKED
) AS picked
WHERE jobs.id = picked.id
RETURNING jobs.body"""


def adopt(conn: Any, me: str, limit: int = 100) -> list[Job]:
    """Take over up to `limit` webhooks owed by nodes that are gone; returns their jobs, for `me` to deliver."""
    return [schema.decode(body) for (body,) in conn.execute(ADOPT, {"me": me, "n": limit}).fetchall()]
