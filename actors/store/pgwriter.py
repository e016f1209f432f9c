"""The PostgreSQL store's one writer thread: the SQLite writer's batching, staging and meta.json mirror,
with PostgreSQL transactions, fenced updates and a connection that is made again after it breaks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from procq.actors.cluster import outputs
from procq.actors.store import pgschema, schema
from procq.actors.store.writer import Change, Writer

log = logging.getLogger("procq.store")


class PgWriter(Writer):
    """Commits batches on its own connection (never a pooled one: it holds it for its whole life).
    Each update names the lease this node holds on the job (None for a job no node has claimed), so
    the change of a node that lost its job to a rerun elsewhere changes nothing (`fenced` counts them)
    and its Commit fails with LeaseMoved: a Supervisor then lets its job go, a cancel of a job claimed
    meanwhile answers from the job's new state."""

    DUPLICATE = psycopg.errors.UniqueViolation
    ERROR = psycopg.Error

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        jobs_dir: Path,
        session: int,
        max_batch_jobs: int,
        lease_of: Callable[[str], int | None],
        output_cap: int = outputs.DEFAULT_CAP,
        node: str | None = None,
    ) -> None:
        self._connect = connect
        self._node = node  # named on a row no node claimed yet (pgschema.UPDATE_JOB)
        self._lease_of = lease_of
        self._output_cap = output_cap
        self.fenced = 0  # updates refused because the job's lease had moved on
        super().__init__(connect(), jobs_dir, session, max_batch_jobs)

    def _conn(self) -> psycopg.Connection:
        if self._db.closed or self._db.broken:  # the server restarted or the network dropped us
            self._db = self._connect()
        return self._db

    def _commit(self, changes: list[Change]) -> None:
        conn = self._conn()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if self._written:  # first: a change in this batch may make one of them stale again
                    cur.executemany(pgschema.MARK_SYNCED, [(self._session, job_id) for job_id in self._written])
                for change in changes:
                    self._apply(cur, change)
        except psycopg.OperationalError:
            conn.close()  # made again for the next batch
            raise
        self._written.clear()
        self.transactions += 1

    def _apply(self, cur: psycopg.Cursor, change: Change) -> None:
        if change.kind == "create":
            rows = [schema.insert_row(j, b) for j, b in zip(change.jobs, change.bodies, strict=True)]
            cur.executemany(pgschema.INSERT_JOB, rows)
            cur.executemany(pgschema.INSERT_TAG, schema.tag_rows(change.jobs))
        elif change.kind == "update":
            change.present, change.refused = [], []
            for job, body in zip(change.jobs, change.bodies, strict=True):
                row = schema.update_row(job, body)
                lease = change.leases[job.id] if job.id in change.leases else self._lease_of(job.id)
                params = (*row[:-1], job.status.value, self._node, row[-1], lease)
                cur.execute(pgschema.UPDATE_JOB, params)
                updated = cur.rowcount > 0
                if not updated and cur.execute(pgschema.GET, (job.id,)).fetchone() is not None:
                    self.fenced += 1
                    change.refused.append(job.id)  # its Commit fails with LeaseMoved
                    log.warning("store: job %s runs under another lease now; this node's change is dropped", job.id)
                if updated and job.status.terminal:
                    self._keep_outputs(cur, job.id)
                change.present.append(updated)
        elif change.kind == "delete":
            rows = [(job_id,) for job_id in change.ids]
            cur.executemany(pgschema.DELETE_TAGS, rows)
            cur.executemany(pgschema.DELETE_JOB, rows)
            cur.executemany(pgschema.DELETE_OUTPUTS, rows)  # the job's kept output and cancel request go with it
            cur.executemany(pgschema.DELETE_CANCEL, rows)
        elif change.kind == "probe":
            cur.execute(pgschema.PUT_SETTING, ("probe", str(time.time())))
        elif change.kind == "synced":
            cur.executemany(pgschema.MARK_SYNCED, [(self._session, job_id) for job_id in change.ids])

    def _keep_outputs(self, cur: psycopg.Cursor, job_id: str) -> None:
        """A finished run's output and log, up to the cap, in the same transaction as its end: any node
        that sees the job finished can serve them (a node that never ran it has no files: nothing kept)."""
        for stream in outputs.STREAMS:
            try:
                outputs.keep(cur, job_id, stream, Path(self._root) / job_id / stream, self._output_cap)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("store: job %s: could not keep its %s in the database: %s", job_id, stream, exc)

    def _record_synced(self) -> None:
        """Idle: record which meta.json files are current, without waiting for the WAL flush (losing
        this only means the next start rewrites a few files that were already right)."""
        if not self._written:
            return
        try:
            conn = self._conn()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit = off")
                cur.executemany(pgschema.MARK_SYNCED, [(self._session, job_id) for job_id in self._written])
            self._written.clear()
        except psycopg.Error as exc:
            log.warning("store: could not record which meta.json files are current: %s", exc)
