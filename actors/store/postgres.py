"""The PostgreSQL store of record: the same seam as the SQLite store, for nodes that share one database.

Needs the `cluster` extra (psycopg 3 and psycopg_pool); nothing imports this module in SQLite mode.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from psycopg.types.json import set_json_loads

from procq.actors.cluster import outputs, retention
from procq.actors.errors import StorageError, StoreUnavailable
from procq.actors.job import Job, Status
from procq.actors.store import files, pgschema, schema
from procq.actors.store.base import Commit, Startup
from procq.actors.store.pgwriter import PgWriter
from procq.actors.store.writer import Change

log = logging.getLogger("procq.store")


def _raw_json(conn: psycopg.Connection) -> None:
    """JSONB comes back as its text, so bodies decode the same way as SQLite's (once, by orjson)."""
    set_json_loads(bytes, context=conn)


# A cut network must fail a query within seconds, not after the kernel's 15-minute retransmission limit:
# a node has to notice it lost the database well within its lease (libpq settings, ignored on Windows
# where the OS lacks them).
NETWORK = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,
}


def connect(url: str, application_name: str) -> psycopg.Connection:
    """One connection outside the pool (the writer's, the heartbeat's), in autocommit mode."""
    conn = psycopg.connect(url, autocommit=True, application_name=application_name, **NETWORK)
    _raw_json(conn)
    return conn


class PostgresStore:
    """The store of record in PostgreSQL (see actors/store/base.py for the calls), for node `node`.

    Threads: `create`, `update` and `delete` queue a change for the one writer thread (its own
    connection) and return its Commit; reads take a connection from a small pool, from any thread.
    The database holds every node's jobs; this node's `jobs_dir` holds the directories (and meta.json
    mirrors) of the jobs it accepted or ran. Migrations run at start under an advisory lock.
    """

    def __init__(
        self,
        url: str,
        jobs_dir: Path,
        node: str = "local",
        pool_size: int = 4,
        max_batch_jobs: int = 5_000,
        claims: bool = False,
        output_cap: int = 8 << 20,
    ) -> None:
        self.url = url
        self.node = node
        self.claims = claims  # cluster mode: queued jobs are claimed from the database, never loaded
        self._jobs_dir = jobs_dir
        self._lock = threading.Lock()  # guards _closed and _leases
        self._closed = False
        self._leases: dict[str, int] = {}  # job id -> the lease this node holds on it
        self.rebuilt = False  # the database is shared: never rebuilt from one node's directories
        self.warnings: list[str] = []
        try:
            with connect(url, f"procq {node} start") as conn:
                pgschema.migrate(conn)
                session = conn.execute("SELECT nextval('procq_session')").fetchone()[0]
        except psycopg.Error as exc:
            raise StorageError("open the PostgreSQL store", exc) from exc
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "application_name": f"procq {node}", **NETWORK},
            configure=_raw_json,
            check=psycopg_pool.ConnectionPool.check_connection,  # a connection the database dropped is replaced
            name=f"procq-{node}",
            open=True,
        )
        self._writer = PgWriter(
            lambda: connect(url, f"procq {node} writer"),
            jobs_dir,
            session,
            max_batch_jobs,
            self.lease_of,
            output_cap,
            node if claims else None,
        )

    # --- leases this node holds (set by the claim, read by the writer) ---------------------------

    def lease_of(self, job_id: str) -> int | None:
        with self._lock:
            return self._leases.get(job_id)

    def hold(self, leases: dict[str, int]) -> None:
        """This node now runs these jobs under these leases: its changes to them carry the lease."""
        with self._lock:
            self._leases.update(leases)

    def release(self, leases: Mapping[str, int | None]) -> None:
        """Give back these leases; a job this node claimed again meanwhile keeps its new one."""
        with self._lock:
            for job_id, lease in leases.items():
                if self._leases.get(job_id) == lease:
                    self._leases.pop(job_id, None)

    # --- writes: queued, committed by the writer thread ------------------------------------------

    def create(self, jobs: Collection[Job]) -> Commit:
        return self._queue_change(Change("create", jobs=tuple(jobs)))

    def update(self, jobs: Collection[Job], sync_files: Collection[str] = ()) -> Commit:
        """Each update carries the lease held on its job now, when it is queued: the same node may claim
        the job again before the writer commits this (or resolves its Commit), and neither this write
        nor this lease's release may then touch the new run (found by bench/cluster_chaos.py: the new
        run's lease was released, its writes were refused, and the job stayed IN_PROGRESS for good)."""
        jobs = tuple(jobs)
        with self._lock:
            leases = {job.id: self._leases.get(job.id) for job in jobs}
        commit = self._queue_change(Change("update", jobs=jobs, sync_files=tuple(sync_files), leases=leases))
        done = {job.id: leases[job.id] for job in jobs if job.status is not Status.IN_PROGRESS}
        if done:  # a run that ended gives its lease back once that is committed
            commit.add_done_callback(functools.partial(self._release_if_written, done, len(jobs)))
        return commit

    def _release_if_written(self, leases: dict[str, int | None], count: int, commit: Commit) -> None:
        """A write refused because the lease moved on keeps its lease: written again (a Supervisor tries
        again), it stays refused; released, it would carry no lease and overwrite the rerun's row once
        that is finished or queued (those rows hold no lease)."""
        if commit.exception() is None and commit.result() == count:
            self.release(leases)

    def delete(self, job_ids: Collection[str]) -> Commit:
        return self._queue_change(Change("delete", ids=tuple(job_ids)))

    def probe(self) -> Commit:
        return self._queue_change(Change("probe", ids=("probe",)))

    @property
    def transactions(self) -> int:
        return self._writer.transactions

    @property
    def fenced(self) -> int:
        """Changes refused because the job had been given to another run (a stale node's writes)."""
        return self._writer.fenced

    def _queue_change(self, change: Change) -> Commit:
        with self._lock:
            if self._closed:
                change.commit.set_exception(StorageError("store the change", RuntimeError("the store is closed")))
            else:
                self._writer.submit(change)
        return change.commit

    # --- reads: committed state, from any thread -------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection (autocommit); failures become StorageError."""
        try:
            with self.pool.connection(timeout=10) as conn:
                yield conn
        except psycopg.OperationalError as exc:  # the database is away (cut off, down, every connection stuck)
            raise StoreUnavailable(exc) from exc
        except psycopg.Error as exc:
            raise StorageError("read the store", exc) from exc

    def _rows(self, sql: str, params: Iterable[object]) -> list[tuple[Any, ...]]:
        with self.connection() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def get(self, job_id: str) -> Job | None:
        rows = self._rows(pgschema.GET, (job_id,))
        return schema.decode(rows[0][0]) if rows else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        jobs = (schema.decode(row[0]) for row in self._rows(pgschema.GET_MANY, (list(job_ids),)))
        return {job.id: job for job in jobs}

    def with_idempotency_key(self, key_sha256: str) -> list[Job]:
        return [schema.decode(row[0]) for row in self._rows(pgschema.BY_KEY, (key_sha256,))]

    def page(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        owner: str | None,
        before: str | None,
        limit: int,
    ) -> list[Job]:
        return [schema.decode(body) for _, body in self.page_bodies(statuses, tag, owner, before, limit)]

    def page_bodies(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        owner: str | None,
        before: str | None,
        limit: int,
        search: str | None = None,
    ) -> list[tuple[str, bytes]]:
        sql, params = pgschema.page_query(statuses, tag, owner, before, limit, search)
        return [(job_id, body) for job_id, body in self._rows(sql, params)]

    def counts(self, owner: str | None = None) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        sql, params = (pgschema.COUNTS_OF, (owner,)) if owner is not None else (pgschema.COUNTS, ())
        for status, count in self._rows(sql, params):
            counts[Status(status)] = count
        return counts

    def expired(self, completed_before: str, limit: int) -> list[Job]:
        """As SQLite's; a claiming node only those whose rows it may delete (actors/cluster/retention.py)."""
        if not self.claims:
            return [schema.decode(row[0]) for row in self._rows(pgschema.EXPIRED, (completed_before, limit))]
        with self.connection() as conn:
            return [schema.decode(body) for body in retention.expired(conn, self.node, completed_before, limit)]

    def leftovers(self) -> list[Job]:
        """This node's directories of jobs gone from the database (deleted through another node)."""
        with self.connection() as conn:
            return retention.leftovers(conn, self._jobs_dir)

    def startup(self) -> Startup:
        """As SQLite's, for this node: meta.json files it holds that lag behind the database are
        rewritten, and `running` holds the runs this node (or a single node, which claims nothing)
        left behind; queued and owed jobs are everyone's."""
        stale = [(i, b) for i, b in self._rows(pgschema.UNSYNCED, ()) if (self._jobs_dir / i).is_dir()]
        for job_id, body in stale:
            try:
                files.write_meta(str(self._jobs_dir / job_id), body)
            except OSError as exc:
                log.error("job %s: could not rewrite its meta.json: %s", job_id, exc)
        if stale:
            self._queue_change(Change("synced", ids=[job_id for job_id, _ in stale]))
        counts = dict.fromkeys(Status, 0)
        for status, count in self._rows(pgschema.COUNTS, ()):
            counts[Status(status)] = count
        mine = "SELECT body FROM jobs WHERE status = 'IN_PROGRESS' AND (node = %s OR node IS NULL) ORDER BY id"
        # a claiming node owes the webhooks of the runs it made (and of jobs that never ran: any node may)
        owed = pgschema.OWED.replace(" ORDER BY", " AND (node = %s OR node IS NULL) ORDER BY")
        queued = [] if self.claims else self._rows(pgschema.WITH_STATUS, (Status.IN_QUEUE.value,))
        return Startup(
            queued=[schema.decode(row[0]) for row in queued],
            running=[schema.decode(row[0]) for row in self._rows(mine, (self.node,))],
            owed=[schema.decode(row[0]) for row in self._rows(owed, (self.node,))]
            if self.claims
            else [schema.decode(row[0]) for row in self._rows(pgschema.OWED, ())],
            counts=counts,
            rewritten=len(stale),
        )

    def kept_output(self, job_id: str, stream: str) -> outputs.Kept | None:
        """A finished job's output or log as the node that ran it kept it (up to the cap), or None."""
        with self.connection() as conn:
            return outputs.read(conn, job_id, stream)

    def trouble(self) -> str | None:
        return self._writer.trouble

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.stop()
        self._writer._db.close()
        self.pool.close()
