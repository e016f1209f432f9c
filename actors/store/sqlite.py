"""The SQLite store of record: WAL, synchronous=FULL, one writer thread that group-commits every change."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path

import psutil

from procq.actors.errors import StorageError
from procq.actors.job import Job, Status
from procq.actors.store import files, schema
from procq.actors.store.base import Commit, Startup
from procq.actors.store.writer import Change, Writer, insert

log = logging.getLogger("procq.store")

DB_NAME = ".procq.db"  # a dot-name inside the jobs directory: never taken for a job
_REBUILD_CHUNK = 10_000


class SqliteStore:
    """The store of record in `jobs_dir/.procq.db` (see actors/store/base.py for the calls).

    Threads: `create`, `update` and `delete` only queue a change for the one writer thread
    (actors/store/writer.py) and return its Commit. Reads use one connection per calling thread and,
    with WAL, never wait for the writer. A missing or unreadable database is rebuilt from the job
    directories; each run is numbered, so one the OS went down under has its meta.json files rewritten.
    """

    def __init__(self, jobs_dir: Path, busy_timeout_s: float = 5.0, max_batch_jobs: int = 5_000) -> None:
        self._jobs_dir = jobs_dir
        self._path = jobs_dir / DB_NAME
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _readers and _closed
        self._closed = False
        self._session = 0  # this run's number: rows record the run that wrote their meta.json
        self.rebuilt = False
        self.warnings: list[str] = []
        self._db = self._open()
        self._writer = Writer(self._db, jobs_dir, self._session, max_batch_jobs)

    # --- writes: queued, committed by the writer thread ------------------------------------------

    def create(self, jobs: Collection[Job]) -> Commit:
        return self._queue_change(Change("create", jobs=tuple(jobs)))

    def update(self, jobs: Collection[Job], sync_files: Collection[str] = ()) -> Commit:
        return self._queue_change(Change("update", jobs=tuple(jobs), sync_files=tuple(sync_files)))

    def delete(self, job_ids: Collection[str]) -> Commit:
        return self._queue_change(Change("delete", ids=tuple(job_ids)))

    def probe(self) -> Commit:
        return self._queue_change(Change("probe", ids=("probe",)))

    @property
    def transactions(self) -> int:
        """Transactions committed by the writer (tests and the bench count batches with it)."""
        return self._writer.transactions

    def _queue_change(self, change: Change) -> Commit:
        with self._lock:
            if self._closed:
                change.commit.set_exception(StorageError("store the change", RuntimeError("the store is closed")))
            else:
                self._writer.submit(change)
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

    def with_idempotency_key(self, key_sha256: str) -> list[Job]:
        return [schema.decode(row[0]) for row in self._read(schema.BY_KEY, (key_sha256,))]

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
    ) -> list[tuple[str, str]]:
        sql, params = schema.page_query(statuses, tag, owner, before, limit, search)
        return self._read(sql, params).fetchall()

    def counts(self, owner: str | None = None) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        sql, params = (schema.COUNTS_OF, (owner,)) if owner is not None else (schema.COUNTS, ())
        for status, count in self._read(sql, params):
            counts[Status(status)] = count
        return counts

    def expired(self, completed_before: str, limit: int) -> list[Job]:
        return [schema.decode(row[0]) for row in self._read(schema.EXPIRED, (completed_before, limit))]

    def startup(self) -> Startup:
        stale = self._read(schema.UNSYNCED, ()).fetchall()
        for job_id, body in stale:  # the store is the truth: a file that lags behind it is replaced
            try:
                files.write_meta(str(self._jobs_dir / job_id), body.encode())
            except OSError as exc:
                log.error("job %s: could not rewrite its meta.json: %s", job_id, exc)
        if stale:
            self._queue_change(Change("synced", ids=[job_id for job_id, _ in stale]))
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
        return self._writer.trouble

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.stop()
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
        db = self._connect()  # fails on a missing folder or no permission: not a damaged database
        try:
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
                    count += insert(db, chunk, [schema.encode(j) for j in chunk], synced=self._session)
                    chunk = []
            count += insert(db, chunk, [schema.encode(j) for j in chunk], synced=self._session)
            db.execute(schema.PUT_SETTING, ("version", str(schema.VERSION)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for warning in self.warnings:
            log.warning("rebuilding the store: skipping %s", warning)
        if count:
            log.warning("the store was rebuilt from %d job directories in %s", count, self._jobs_dir)
        return count


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
