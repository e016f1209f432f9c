"""The store of record's tables in PostgreSQL and the migrations that make them, run at every start.

The statements that read and write jobs are actors/store/schema.py's, with `?` turned into `%s`; the
tables differ where PostgreSQL does better: ids sort bytewise (COLLATE "C", as in SQLite), the body is
JSONB, and the columns a claim filters on are generated from the body, so every engine writes the same
rows with the same INSERT and UPDATE. The cluster's own tables (nodes, queues, cancels, outputs) live
here too. Finished rows stay off the hot path: the claim and the lease sweep read partial indexes that
hold only queued or running rows.
"""

from __future__ import annotations

from typing import Any

from procq.actors.store import schema

# The claim order's aging (a job's priority grows by 1 per AGING_S seconds waited) is fixed in the
# schema so the runnable index holds rows in start order and a claim reads only the first few; the
# single-node default. Another value needs a migration (a new `rank` expression), not a flag.
AGING_S = 60.0
MIGRATE_LOCK = 0x70726F6371  # "procq": pg_advisory_lock key held while one node migrates

# Each step runs once, in order, in its own transaction; a fresh database runs them all. Every
# statement is also idempotent (IF NOT EXISTS), so a step cut short by a crash can simply run again.
STEPS: tuple[tuple[str, ...], ...] = (
    (
        # ISO-8601 UTC text ("...Z") to seconds; immutable for the generated columns (the "Z" fixes the zone)
        """CREATE OR REPLACE FUNCTION procq_epoch(ts text) RETURNS double precision
           LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT extract(epoch FROM ts::timestamptz)::float8 $$""",
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT COLLATE "C" PRIMARY KEY,
            status TEXT NOT NULL,
            queue TEXT NOT NULL,
            owner TEXT,
            idem TEXT,
            enqueued_at TEXT COLLATE "C",
            completed_at TEXT COLLATE "C",
            owed INTEGER NOT NULL,
            synced INTEGER NOT NULL,
            body JSONB NOT NULL,
            node TEXT,  -- the node that claimed its current or last run
            lease BIGINT,  -- that claim's fencing token: a node's writes name it, a rerun changes it
            priority INTEGER GENERATED ALWAYS AS (coalesce((body->>'priority')::int, 0)) STORED,
            ready_s FLOAT8 GENERATED ALWAYS AS (
                greatest(procq_epoch(enqueued_at), procq_epoch(body->>'run_at'))) STORED,
            rank FLOAT8 GENERATED ALWAYS AS (
                greatest(procq_epoch(enqueued_at), procq_epoch(body->>'run_at'))
                - coalesce((body->>'priority')::int, 0) * AGING) STORED,
            has_after BOOLEAN GENERATED ALWAYS AS (coalesce(jsonb_array_length(body->'after'), 0) > 0) STORED,
            requires JSONB GENERATED ALWAYS AS (nullif(body->'requires', '{}'::jsonb)) STORED
        )""",
        """CREATE TABLE IF NOT EXISTS tags (
            tag TEXT COLLATE "C" NOT NULL, job_id TEXT COLLATE "C" NOT NULL, PRIMARY KEY (tag, job_id))""",
        schema.TABLES[2],  # settings
        *(s for s in schema.TABLES[3:] if "INDEX" in s),  # the listing indexes, as in SQLite
        # the hot path: claims walk only queued rows in start order, the lease sweep only running ones
        "CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (rank, id) WHERE status = 'IN_QUEUE'",
        "CREATE INDEX IF NOT EXISTS jobs_running ON jobs (node) WHERE status = 'IN_PROGRESS'",
        "CREATE SEQUENCE IF NOT EXISTS procq_lease",
        "CREATE SEQUENCE IF NOT EXISTS procq_session",
        """CREATE TABLE IF NOT EXISTS nodes (
            name TEXT PRIMARY KEY,
            address TEXT,
            slots INTEGER NOT NULL,
            resources JSONB NOT NULL DEFAULT '{}',  -- units of each resource the node has in all
            incarnation BIGINT NOT NULL,  -- changes at every start: a restarted node is a new lease holder
            started_at TIMESTAMPTZ NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL,
            lease_until TIMESTAMPTZ NOT NULL,
            state TEXT NOT NULL  -- up, left (stopped cleanly) or lost (its lease ran out)
        )""",
        # a queue's cluster-wide parallelism and pause; a queue without a row is bounded only by slots
        """CREATE TABLE IF NOT EXISTS queues (
            name TEXT PRIMARY KEY, parallelism INTEGER, paused BOOLEAN NOT NULL DEFAULT false)""",
        # cancel through any node: a row the owning node acts on; done_at once its tree is gone
        """CREATE TABLE IF NOT EXISTS cancels (
            job_id TEXT COLLATE "C" PRIMARY KEY, node TEXT NOT NULL, lease BIGINT,
            requested_at TIMESTAMPTZ NOT NULL DEFAULT now(), done_at TIMESTAMPTZ)""",
        "CREATE INDEX IF NOT EXISTS cancels_open ON cancels (node) WHERE done_at IS NULL",
        # a finished job's output, up to the cap, readable from any node once its own node is gone
        """CREATE TABLE IF NOT EXISTS outputs (
            job_id TEXT COLLATE "C" NOT NULL, stream TEXT NOT NULL, data BYTEA NOT NULL,
            size BIGINT NOT NULL, complete BOOLEAN NOT NULL, PRIMARY KEY (job_id, stream))""",
    ),
    (
        # every job's state changes, whichever node made them, for every node's GET /events
        # (actors/cluster/feed.py). A trigger writes them in the changing transaction itself, so no
        # writer (claim, sweep, a node's writer) can forget one and a rolled-back change logs nothing.
        # `xid` is the writing transaction's id: a reader knows every transaction below its snapshot's
        # xmin has ended, so it can tell which events may still appear (see feed.py).
        """CREATE TABLE IF NOT EXISTS job_events (
            seq BIGSERIAL NOT NULL,  -- in commit order for any one job (its row lock orders them)
            xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
            at TIMESTAMPTZ NOT NULL DEFAULT now(),
            kind TEXT NOT NULL,  -- job or deleted, as GET /events names them
            data JSONB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS job_events_xid ON job_events (xid)",
        """CREATE OR REPLACE FUNCTION procq_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF TG_OP = 'DELETE' THEN
               INSERT INTO job_events (kind, data) VALUES ('deleted', jsonb_build_object('id', OLD.id));
               RETURN OLD;
             END IF;
             INSERT INTO job_events (kind, data) VALUES ('job', jsonb_build_object(
               'id', NEW.id, 'status', NEW.status, 'enqueued_at', NEW.body->'enqueued_at',
               'started_at', NEW.body->'started_at', 'completed_at', NEW.body->'completed_at', 'node', NEW.node));
             RETURN NEW;
           END $$""",
        "DROP TRIGGER IF EXISTS jobs_created ON jobs",
        "CREATE TRIGGER jobs_created AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION procq_job_event()",
        "DROP TRIGGER IF EXISTS jobs_changed ON jobs",
        # a change of state only: webhook deliveries and MARK_SYNCED rewrite rows without one
        """CREATE TRIGGER jobs_changed AFTER UPDATE OF status ON jobs FOR EACH ROW
           WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION procq_job_event()""",
        "DROP TRIGGER IF EXISTS jobs_deleted ON jobs",
        "CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION procq_job_event()",
    ),
)
STEPS = tuple(tuple(s.replace("AGING", repr(AGING_S)) for s in step) for step in STEPS)
VERSION = len(STEPS)


def pg(sql: str) -> str:
    """schema.py's qmark SQL in psycopg's format style (the shared statements hold no literal `?` or `%`)."""
    return sql.replace("?", "%s")


INSERT_JOB = pg(schema.INSERT_JOB)
INSERT_TAG = pg(schema.INSERT_TAG) + " ON CONFLICT DO NOTHING"
# a node's change lands only while the row still carries the lease the node holds (fencing)
# (a job leaving IN_PROGRESS drops its lease, so any node may change it next; the %s after the job's
# columns is the new status). A row no node claimed yet gets the writing node's name: a job that ends
# without running (canceled while queued, failed by its dependency) owes its webhook to that node,
# and another adopts the debt if it is gone (actors/cluster/owed.py).
UPDATE_JOB = (
    pg(schema.UPDATE_JOB).replace(
        " WHERE id", ", lease = CASE WHEN %s = 'IN_PROGRESS' THEN lease END, node = coalesce(node, %s) WHERE id"
    )
    + " AND lease IS NOT DISTINCT FROM %s"
)
MARK_SYNCED = pg(schema.MARK_SYNCED)
DELETE_JOB = pg(schema.DELETE_JOB)
DELETE_TAGS = pg(schema.DELETE_TAGS)
DELETE_OUTPUTS = "DELETE FROM outputs WHERE job_id = %s"
DELETE_CANCEL = "DELETE FROM cancels WHERE job_id = %s"
GET = pg(schema.GET)
GET_MANY = "SELECT body FROM jobs WHERE id = ANY(%s)"
BY_KEY = pg(schema.BY_KEY)
WITH_STATUS = pg(schema.WITH_STATUS)
OWED = pg(schema.OWED)
UNSYNCED = pg(schema.UNSYNCED)
COUNTS = pg(schema.COUNTS)
COUNTS_OF = pg(schema.COUNTS_OF)
EXPIRED = pg(schema.EXPIRED)
GET_SETTING = pg(schema.GET_SETTING)
PUT_SETTING = pg(schema.PUT_SETTING)
LEASES_OF = "SELECT id, lease FROM jobs WHERE node = %s AND status = 'IN_PROGRESS'"


# the listing's search looks into the command with SQLite's JSON functions; PostgreSQL's equivalent
_SEARCH_SQLITE = "instr(lower(json_extract(jobs.body, '$.args')), ?) > 0"
_SEARCH_PG = "strpos(lower(jobs.body->>'args'), %s) > 0"


def page_query(*args: Any) -> tuple[str, list[Any]]:
    sql, params = schema.page_query(*args)
    return pg(sql.replace(_SEARCH_SQLITE, _SEARCH_PG)), params


def migrate(conn: Any) -> int:
    """Bring the database to VERSION under an advisory lock, so nodes starting together take turns
    and the later ones find nothing to do. Returns the version found before. `conn` is in autocommit."""
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        exists = conn.execute("SELECT to_regclass('settings') IS NOT NULL").fetchone()[0]
        row = conn.execute(GET_SETTING, ("version",)).fetchone() if exists else None
        found = int(row[0]) if row else 0
        if found > VERSION:
            raise RuntimeError(f"the database was made by a newer procq (schema {found}, this one knows {VERSION})")
        for number, step in enumerate(STEPS[found:], start=found + 1):
            with conn.transaction():
                for statement in step:
                    conn.execute(statement)
                conn.execute(PUT_SETTING, ("version", str(number)))
        return found
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
