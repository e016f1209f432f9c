"""The SQLite store of record: WAL, synchronous=FULL, one writer thread that group-commits every change."""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from procq.actors.errors import StorageError
from procq.actors.job import Job, Status
from procq.actors.store import files, schema
from procq.actors.store.base import Commit, Startup

log = logging.getLogger("procq.store")

DB_NAME = ".procq.db"  # a dot-name inside the jobs directory: never taken for a job
_IDLE_S = 0.05  # with nothing to commit for this long, the writer records which meta.json files are current
_REBUILD_CHUNK = 10_000


@dataclass(slots=True)
class _Change:
    kind: str  # "create", "update", "delete" or "synced" (meta.json files now match these rows)
    jobs: Collection[Job] = ()
    ids: Collection[str] = ()
    commit: Commit = field(default_factory=Future)
    bodies: list[bytes] = field(default_factory=list)
    staged: list[Path] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)  # per update: did the row exist


class SqliteStore:
    """The store of record in `jobs_dir/.procq.db` (see actors/store/base.py for the calls).

    Threads: `create`, `update` and `delete` only queue a change and return its Commit; the writer
    thread takes every change queued meanwhile, stages new job directories, commits them all in one
    transaction (one fsync), then renames the new directories into place, rewrites meta.json of the
    changed jobs, and resolves each Commit. Reads use one connection per calling thread and, with WAL,
    never wait for the writer. A missing or unreadable database is rebuilt from the job directories.
    """

    def __init__(self, jobs_dir: Path, busy_timeout_s: float = 5.0, max_batch_jobs: int = 5_000) -> None:
        self._jobs_dir = jobs_dir
        self._path = jobs_dir / DB_NAME
        self._busy_timeout_s = busy_timeout_s
        self._max_batch = max_batch_jobs
        self._queue: queue.SimpleQueue[_Change | None] = queue.SimpleQueue()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _readers and _closed
        self._closed = False
        self._trouble: str | None = None
        self._written: list[str] = []  # writer thread: ids whose meta.json matches their committed row
        self._session = 0  # this run's number: rows record the run that wrote their meta.json
        self.transactions = 0  # committed by the writer (tests and the bench count batches with it)
        self.rebuilt = False
        self.warnings: list[str] = []
        self._db = self._open()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # --- writes: queued, committed by the writer thread ------------------------------------------

    def create(self, jobs: Collection[Job]) -> Commit:
        return self._queue_change(_Change("create", jobs=tuple(jobs)))

    def update(self, jobs: Collection[Job]) -> Commit:
        return self._queue_change(_Change("update", jobs=tuple(jobs)))

    def delete(self, job_ids: Collection[str]) -> Commit:
        return self._queue_change(_Change("delete", ids=tuple(job_ids)))

    def _queue_change(self, change: _Change) -> Commit:
        with self._lock:
            if self._closed:
                change.commit.set_exception(StorageError("store the change", RuntimeError("the store is closed")))
            else:
                self._queue.put(change)
        return change.commit

    # --- reads: committed state, from any thread -------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self._read(schema.GET, (job_id,)).fetchone()
        return schema.decode(row[0]) if row else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for job_id in job_ids:
            job = self.get(job_id)
            if job is not None:
                found[job_id] = job
        return found

    def by_idempotency_key(self, key_sha256: str) -> Job | None:
        row = self._read(schema.BY_KEY, (key_sha256,)).fetchone()
        return schema.decode(row[0]) if row else None

    def page(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        owner: str | None,
        before: str | None,
        limit: int,
    ) -> list[Job]:
        sql, params = schema.page_query(statuses, tag, owner, before, limit)
        return [schema.decode(body) for _, body in self._read(sql, params)]

    def expired(self, completed_before: str, limit: int) -> list[Job]:
        return [schema.decode(row[0]) for row in self._read(schema.EXPIRED, (completed_before, limit))]

    def startup(self) -> Startup:
        stale = self._read(schema.UNSYNCED, ()).fetchall()
        for job_id, body in stale:  # the store is the truth: a file that lags behind it is replaced
            try:
                files.write_meta(self._jobs_dir / job_id, body.encode())
            except OSError as exc:
                log.error("job %s: could not rewrite its meta.json: %s", job_id, exc)
        if stale:
            self._queue_change(_Change("synced", ids=[job_id for job_id, _ in stale]))
        counts = dict.fromkeys(Status, 0)
        for status, count in self._read(schema.COUNTS, ()):
            counts[Status(status)] = count
        return Startup(
            queued=[schema.decode(row[0]) for row in self._read(schema.WITH_STATUS, (Status.IN_QUEUE.value,))],
            running=[schema.decode(row[0]) for row in self._read(schema.WITH_STATUS, (Status.IN_PROGRESS.value,))],
            owed=[schema.decode(row[0]) for row in self._read(schema.OWED, ())],
            counts=counts,
            rewritten=len(stale),
            rebuilt=self.rebuilt,
        )

    def trouble(self) -> str | None:
        return self._trouble

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self._db.execute(schema.PUT_SETTING, ("clean", "1"))
        self._db.close()
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _read(self, sql: str, params: Iterable[object]) -> sqlite3.Cursor:
        reader = getattr(self._local, "db", None)
        try:
            if reader is None:
                reader = self._connect()
                reader.execute("PRAGMA query_only = ON")
                self._local.db = reader
                with self._lock:
                    self._readers.append(reader)
            return reader.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StorageError("read the store", exc) from exc

    # --- opening ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # autocommit mode: the writer says BEGIN and COMMIT itself; readers read the newest commit
        return sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_s)

    def _open(self) -> sqlite3.Connection:
        """Open (or create) the database; rebuild it from the job directories if it was missing or damaged."""
        fresh = not self._path.exists()
        if fresh:  # a WAL left without its database would be replayed into the new one
            for suffix in ("-wal", "-shm"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)
        try:
            db = self._connect()
            _prepare(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            aside = self._path.with_name(f"{DB_NAME}.damaged-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self._path}{suffix}").rename(f"{aside}{suffix}")
            self.warnings.append(f"the database was unreadable ({exc}); moved to {aside.name}, rebuilt from the jobs")
            log.error("%s", self.warnings[-1])
            fresh = True
            db = self._connect()
            _prepare(db)
        self._session = self._begin_session(db)
        if fresh:
            self.rebuilt = self._rebuild(db) > 0
        return db

    def _begin_session(self, db: sqlite3.Connection) -> int:
        """Number this run. If the last run did not close and the machine has booted since, the OS went
        down under it: meta.json files it wrote (never fsynced) may be stale or empty, so they are
        marked for rewriting. A crash of the server alone loses nothing: the OS still had the files."""
        setting = {name: db.execute(schema.GET_SETTING, (name,)).fetchone() for name in ("session", "clean", "boot")}
        previous = int(setting["session"][0]) if setting["session"] else 0
        boot = psutil.boot_time()
        db.execute("BEGIN IMMEDIATE")
        if setting["clean"] and setting["clean"][0] == "0" and abs(float(setting["boot"][0]) - boot) > 5:
            # the run before it too: the OS writes files back within ~30 s, so a short last run is not enough
            stale = db.execute(schema.UNSYNC_SESSIONS, (max(1, previous - 1),)).rowcount
            log.warning("store: the machine went down during the last run; %d meta.json files will be rewritten", stale)
        for name, value in (("session", previous + 1), ("clean", 0), ("boot", boot)):
            db.execute(schema.PUT_SETTING, (name, str(value)))
        db.execute("COMMIT")
        return previous + 1

    def _rebuild(self, db: sqlite3.Connection) -> int:
        """Fill a new database from every job directory's meta.json. Returns how many jobs it found."""
        count = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            chunk: list[Job] = []
            for job in files.scan(self._jobs_dir, self.warnings):
                chunk.append(job)
                if len(chunk) >= _REBUILD_CHUNK:
                    count += _insert(db, chunk, [schema.encode(j) for j in chunk], synced=self._session)
                    chunk = []
            count += _insert(db, chunk, [schema.encode(j) for j in chunk], synced=self._session)
            db.execute(schema.PUT_SETTING, ("version", str(schema.VERSION)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for warning in self.warnings:
            log.warning("rebuilding the store: skipped %s", warning)
        if count:
            log.warning("the store was rebuilt from %d job directories in %s", count, self._jobs_dir)
        return count

    # --- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=_IDLE_S if self._written else None)
            except queue.Empty:
                self._record_synced()
                continue
            batch: list[_Change] = []
            size = 0
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                size += len(item.jobs) + len(item.ids)
                if size >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except BaseException as exc:  # a bug must not leave callers waiting forever
                log.exception("store writer failed")
                self._fail([c for c in batch if not c.commit.done()], StorageError("store the change", exc))
        self._record_synced()

    def _write(self, batch: list[_Change]) -> None:
        ready: list[_Change] = []
        for change in batch:
            change.bodies = [schema.encode(job) for job in change.jobs]
            if change.kind == "create":
                try:
                    change.staged = [
                        files.stage(self._jobs_dir, j.id, b) for j, b in zip(change.jobs, change.bodies, strict=True)
                    ]
                except OSError as exc:
                    self._unstage([change])
                    self._fail([change], StorageError("create the job's directory", exc))
                    continue
            ready.append(change)
        if not ready:
            return
        try:
            self._commit(ready)
        except sqlite3.IntegrityError:  # one bad change (a duplicate id) must not sink the others
            for change in ready:
                try:
                    self._commit([change])
                except sqlite3.Error as exc:
                    self._unstage([change])
                    self._fail([change], StorageError("commit the change", exc))
                else:
                    self._publish([change])
            return
        except sqlite3.Error as exc:
            self._unstage(ready)
            self._fail(ready, StorageError("commit the change", exc))
            return
        self._publish(ready)

    def _commit(self, changes: list[_Change]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._written:  # first: a change in this batch may make one of them stale again
                db.executemany(schema.MARK_SYNCED, [(self._session, job_id) for job_id in self._written])
            for change in changes:
                _apply(db, change, self._session)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._written.clear()
        self.transactions += 1

    def _publish(self, changes: list[_Change]) -> None:
        """After the commit: new directories into place, meta.json of changed jobs, then the receipts."""
        latest: dict[str, bytes | None] = {}
        trouble = None
        for change in changes:
            if change.kind == "create":
                for job, staging in zip(change.jobs, change.staged, strict=True):
                    try:
                        files.publish(staging, self._jobs_dir / job.id)
                        self._written.append(job.id)
                    except OSError as exc:  # committed all the same: the next start writes it again
                        trouble = f"could not move the new job directory of {job.id} into place: {exc}"
            elif change.kind == "update":
                for job, body, present in zip(change.jobs, change.bodies, change.present, strict=True):
                    if present:
                        latest[job.id] = body
            elif change.kind == "delete":
                latest.update(dict.fromkeys(change.ids))
        for job_id, body in latest.items():  # a job changed several times in the batch is written once
            if body is None:
                continue
            try:
                files.write_meta(self._jobs_dir / job_id, body)
                self._written.append(job_id)
            except OSError as exc:
                trouble = f"could not write meta.json of job {job_id}: {exc}"
        if trouble is not None:
            log.error("store: %s", trouble)
        self._trouble = trouble
        for change in changes:
            change.commit.set_result(None)

    def _record_synced(self) -> None:
        """Idle: record which meta.json files are current, without an fsync (losing this only means
        the next start rewrites a few files that were already right)."""
        if not self._written:
            return
        db = self._db
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")
            db.executemany(schema.MARK_SYNCED, [(self._session, job_id) for job_id in self._written])
            db.execute("COMMIT")
            self._written.clear()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            log.warning("store: could not record which meta.json files are current: %s", exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA synchronous = FULL")

    def _unstage(self, changes: list[_Change]) -> None:
        for change in changes:
            for staging in change.staged:
                files.unstage(staging)
            change.staged = []

    def _fail(self, changes: list[_Change], error: StorageError) -> None:
        log.error("store: %s", error)
        self._trouble = str(error)
        for change in changes:
            change.commit.set_exception(error)


def _prepare(db: sqlite3.Connection) -> None:
    """WAL (readers never wait for the writer) and synchronous=FULL (a commit is on disk when COMMIT returns)."""
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        log.warning("store: SQLite refused WAL mode on this filesystem (%s); commits will be slower", mode)
    db.execute("PRAGMA synchronous = FULL")
    for statement in schema.TABLES:
        db.execute(statement)
    row = db.execute(schema.GET_SETTING, ("version",)).fetchone()
    if row is not None and int(row[0]) > schema.VERSION:
        raise RuntimeError(f"the store was written by a newer procq (schema {row[0]}, this one knows {schema.VERSION})")
    if row is None:
        db.execute(schema.PUT_SETTING, ("version", str(schema.VERSION)))


def _insert(db: sqlite3.Connection, jobs: Collection[Job], bodies: list[bytes], synced: int = 0) -> int:
    db.executemany(schema.INSERT_JOB, [schema.insert_row(j, b, synced) for j, b in zip(jobs, bodies, strict=True)])
    db.executemany(schema.INSERT_TAG, schema.tag_rows(jobs))
    return len(jobs)


def _apply(db: sqlite3.Connection, change: _Change, session: int) -> None:
    if change.kind == "create":
        _insert(db, change.jobs, change.bodies)
    elif change.kind == "update":
        change.present = [
            db.execute(schema.UPDATE_JOB, schema.update_row(job, body)).rowcount > 0
            for job, body in zip(change.jobs, change.bodies, strict=True)
        ]
    elif change.kind == "delete":
        rows = [(job_id,) for job_id in change.ids]
        db.executemany(schema.DELETE_TAGS, rows)
        db.executemany(schema.DELETE_JOB, rows)
    elif change.kind == "synced":
        db.executemany(schema.MARK_SYNCED, [(session, job_id) for job_id in change.ids])
