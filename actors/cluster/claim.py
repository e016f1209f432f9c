"""Claiming runnable jobs for one node: one UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) statement.

Order is the single-node Scheduler's (actors/queues.py): the smallest `ready time - priority * aging_s`
first (the `rank` column, aging fixed in actors/store/pgschema.py), ties to the older id; a job
starts once its run_at has come and every job it comes `after` has COMPLETED. Queue limits hold
cluster-wide: a claim locks the rows of the queues that have limits (the `queues` table), so two
nodes never both take a queue's last free place; a queue without a row is bounded only by the nodes'
slots. Resources: a job whose `requires` exceeds what the node has free is skipped; what several
claimed jobs need together is checked after the statement, and jobs that do not fit after all are
put back in the same transaction (nobody ever sees them claimed).

Under contention a claim may return fewer jobs than asked, even none while jobs wait: a row another
node claimed after this statement's snapshot drops out of its result (PostgreSQL rechecks locked rows)
and LIMIT does not refill. The node claims again at its next hint or poll.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from procq.actors.job import Job
from procq.actors.store import schema

_STARTED_AT = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

# Two statements: the first locks the limited queues' rows; the second counts their running jobs with a
# snapshot taken after the lock was granted. Counted in the locking statement itself, the count would
# come from a snapshot taken before waiting for the lock, missing what the node ahead just claimed
# (READ COMMITTED rechecks only the locked row), and two nodes could pass a queue's limit together.
LOCK_LIMITS = "SELECT name FROM queues ORDER BY name FOR UPDATE"
LIMITS = """SELECT q.name, q.parallelism, q.paused,
    (SELECT count(*) FROM jobs WHERE status = 'IN_PROGRESS' AND queue = q.name)
    FROM queues q ORDER BY q.name"""

CLAIM = f"""UPDATE jobs SET status = 'IN_PROGRESS', node = %(node)s, lease = nextval('procq_lease'), synced = 0,
    body = jobs.body || jsonb_build_object(
        'status', 'IN_PROGRESS', 'node', %(node)s::text, 'started_at', {_STARTED_AT},
        'attempts', coalesce((jobs.body->>'attempts')::int, 0) + 1)
FROM (
    SELECT c.id, c.body AS old_body, c.rank FROM jobs c
    WHERE c.status = 'IN_QUEUE' AND c.ready_s <= extract(epoch FROM now()) AND c.id <> ALL(%(busy)s)
      AND c.queue <> ALL(%(closed)s)
      AND (c.requires IS NULL OR NOT EXISTS (
          SELECT 1 FROM jsonb_each_text(c.requires) r
          WHERE r.value::bigint > coalesce((%(free)s::jsonb ->> r.key)::bigint, 0)))
      AND (NOT c.has_after OR NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements_text(c.body->'after') d(id) LEFT JOIN jobs dj ON dj.id = d.id
          WHERE dj.status IS DISTINCT FROM 'COMPLETED'))
    ORDER BY c.rank, c.id
    LIMIT %(n)s
    FOR UPDATE OF c SKIP LOCKED
) AS picked
WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.queue, jobs.lease, jobs.requires, picked.rank, picked.old_body, jobs.body"""

PUT_BACK = "UPDATE jobs SET status = 'IN_QUEUE', node = NULL, lease = NULL, body = %s WHERE id = %s"
# nobody sees a put-back job claimed: not GET /events either (the events its trigger logged, in this transaction)
UNLOG = "DELETE FROM job_events WHERE xid = pg_current_xact_id() AND data->>'id' = ANY(%s)"


@dataclass(frozen=True, slots=True)
class Claimed:
    job: Job  # IN_PROGRESS, attempts counted, started_at from the database's clock
    lease: int  # the fencing token every write about this run names
    before: Job  # the job as it was queued: a Supervisor starts from it and records the attempt itself


def claim(
    conn: Any, node: str, slots: int, free: Mapping[str, int] | None = None, busy: Collection[str] = ()
) -> list[Claimed]:
    """Claim up to `slots` jobs for `node`, which has `free` units of each resource left, in one
    transaction on `conn` (autocommit). Returns them in start order. `busy`: jobs whose last run on
    this node is not yet over for its Dispatcher (its end committed, not yet handled): never claimed
    again here before, or that run's late handling would touch the new one."""
    if slots <= 0:
        return []
    free = dict(free or {})
    with conn.transaction():
        closed, budget = [], {}
        conn.execute(LOCK_LIMITS)
        for name, parallelism, paused, running in conn.execute(LIMITS):
            if paused or (parallelism is not None and running >= parallelism):
                closed.append(name)
            elif parallelism is not None:
                budget[name] = parallelism - running
        params = {"node": node, "closed": closed, "free": orjson.dumps(free).decode(), "n": slots, "busy": list(busy)}
        rows = sorted(conn.execute(CLAIM, params).fetchall(), key=lambda row: (row[4], row[0]))
        taken, back = [], []
        for job_id, queue, lease, requires, _, old_body, body in rows:
            needs = orjson.loads(requires) if requires else {}
            fits = all(free.get(name, 0) >= units for name, units in needs.items())
            if not fits or budget.get(queue, 1) <= 0:
                back.append((bytes(old_body).decode(), job_id))
                continue
            for name, units in needs.items():
                free[name] -= units
            if queue in budget:
                budget[queue] -= 1
            taken.append(Claimed(schema.decode(body), lease, schema.decode(old_body)))
        if back:
            with conn.cursor() as cur:
                cur.executemany(PUT_BACK, back)
            conn.execute(UNLOG, ([job_id for _, job_id in back],))
    return taken


def set_queue(conn: Any, name: str, parallelism: int | None = None, paused: bool = False) -> None:
    """A queue's cluster-wide limit (None: only the nodes' slots bound it) and pause."""
    conn.execute(
        "INSERT INTO queues (name, parallelism, paused) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET parallelism = excluded.parallelism, paused = excluded.paused",
        (name, parallelism, paused),
    )
