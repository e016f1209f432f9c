"""The store's one writer thread: takes every change queued meanwhile and commits them as one transaction."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procq.actors.errors import LeaseMoved, StorageError
from procq.actors.job import Job
from procq.actors.store import files, schema
from procq.actors.store.base import Commit

log = logging.getLogger("procq.store")

_IDLE_S = 0.05  # with nothing to commit for this long, the writer records which meta.json files are current
_MARK_AT = 5_000  # or within a commit once this many files are current but unmarked (a server never idle)


@dataclass(slots=True)
class Change:
    kind: str  # "create", "update", "delete", "synced" (meta.json files match these rows) or "probe"
    jobs: Collection[Job] = ()
    ids: Collection[str] = ()
    commit: Commit = field(default_factory=Future)
    bodies: list[bytes] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)  # per update: did the row exist
    refused: list[str] = field(default_factory=list)  # PostgreSQL: updates refused, their lease moved on
    sync_files: tuple[str, ...] = ()  # made durable before the change is committed
    leases: dict[str, int | None] = field(default_factory=dict)  # PostgreSQL: each update's lease, as queued


class Writer:
    """Owns the write connection and its thread. `submit` queues a change and returns its Commit;
    the thread takes every change queued meanwhile, stages new job directories, commits them all in
    one transaction (one fsync), renames the new directories into place, rewrites meta.json of the
    changed jobs (once per job per batch), and only then resolves each Commit.

    Another engine subclasses it: its own `_commit` and `_record_synced`, and its error classes here."""

    DUPLICATE: type[Exception] = sqlite3.IntegrityError  # one change's fault: retried alone, the others commit
    ERROR: type[Exception] = sqlite3.Error  # the engine's failures: the batch fails with StorageError

    def __init__(self, db: Any, jobs_dir: Path, session: int, max_batch_jobs: int) -> None:
        self._db = db
        self._root = str(jobs_dir)  # plain strings on the hot path
        self._session = session
        self._max_batch = max_batch_jobs
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        # ids whose meta.json was written from their latest committed row: marked so in the store when
        # idle (not in every commit: that cost an UPDATE per file written); an id whose later write
        # failed is taken out, so its row stays unsynced and the next start rewrites the file
        self._written: dict[str, None] = {}
        self.trouble: str | None = None  # why the last batch failed, until one succeeds
        self.transactions = 0  # committed (tests and the bench count batches with it)
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, change: Change) -> Commit:
        self._queue.put(change)
        return change.commit

    def stop(self) -> None:
        """Commit what is queued, then end the thread. Blocks."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=_IDLE_S if self._written else None)
            except queue.Empty:
                self._record_synced()
                continue
            batch: list[Change] = []
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

    def _write(self, batch: list[Change]) -> None:
        ready: list[Change] = []
        for change in batch:
            change.bodies = [schema.encode(job) for job in change.jobs]
            try:
                for path in change.sync_files:
                    files.sync(path)
            except OSError as exc:
                self._fail([change], StorageError("make the job's output durable", exc))
                continue
            if change.kind == "create":
                try:
                    for job, body in zip(change.jobs, change.bodies, strict=True):
                        change.staged.append(files.stage(self._root, job.id, body))
                except OSError as exc:  # all or nothing: the ones staged before it go too
                    self._unstage([change])
                    self._fail([change], StorageError("create the job's directory", exc))
                    continue
            ready.append(change)
        if not ready:
            return
        try:
            self._commit(ready)
        except self.DUPLICATE:  # one bad change (a duplicate id) must not sink the others
            for change in ready:
                try:
                    self._commit([change])
                except self.ERROR as exc:
                    self._unstage([change])
                    self._fail([change], StorageError("commit the change", exc))
                else:
                    self._publish([change])
            return
        except self.ERROR as exc:
            self._unstage(ready)
            self._fail(ready, StorageError("commit the change", exc))
            return
        self._publish(ready)

    def _commit(self, changes: list[Change]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        mark = len(self._written) >= _MARK_AT
        try:
            if mark:  # first: a change in this batch may make one of them stale again
                db.executemany(schema.MARK_SYNCED, [(self._session, job_id) for job_id in self._written])
            for change in changes:
                _apply(db, change, self._session)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        if mark:
            self._written.clear()
        self.transactions += 1

    def _publish(self, changes: list[Change]) -> None:
        """After the commit: new directories into place, meta.json of changed jobs, then the receipts."""
        latest: dict[str, bytes | None] = {}
        trouble = None
        for change in changes:
            if change.kind == "create":
                for job, staging in zip(change.jobs, change.staged, strict=True):
                    try:
                        files.publish(staging, os.path.join(self._root, job.id))
                        self._written[job.id] = None
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
                self._written.pop(job_id, None)
                continue
            try:
                files.write_meta(os.path.join(self._root, job_id), body)
                self._written[job_id] = None
            except OSError as exc:
                self._written.pop(job_id, None)
                trouble = f"could not write meta.json of job {job_id}: {exc}"
        if trouble is not None:
            log.error("store: %s", trouble)
        written = [sum(c.present) if c.kind == "update" else len(c.jobs or c.ids) for c in changes]
        if trouble is not None or any(written):  # only a batch that stored something shows the trouble is over
            self.trouble = trouble
        for change, count in zip(changes, written, strict=True):
            if change.refused:  # the rest of the change is committed; the caller must know these were not
                change.commit.set_exception(LeaseMoved(change.refused))
            else:
                change.commit.set_result(count)  # an update of a job that is gone from the store writes none

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

    def _unstage(self, changes: list[Change]) -> None:
        for change in changes:
            for staging in change.staged:
                files.unstage(staging)
            change.staged = []

    def _fail(self, changes: list[Change], error: StorageError) -> None:
        log.error("store: %s", error)
        self.trouble = str(error)
        for change in changes:
            change.commit.set_exception(error)


def insert(db: sqlite3.Connection, jobs: Collection[Job], bodies: list[bytes], synced: int = 0) -> int:
    db.executemany(schema.INSERT_JOB, [schema.insert_row(j, b, synced) for j, b in zip(jobs, bodies, strict=True)])
    db.executemany(schema.INSERT_TAG, schema.tag_rows(jobs))
    return len(jobs)


def _apply(db: sqlite3.Connection, change: Change, session: int) -> None:
    if change.kind == "create":
        insert(db, change.jobs, change.bodies)
    elif change.kind == "update":
        change.present = [
            db.execute(schema.UPDATE_JOB, schema.update_row(job, body)).rowcount > 0
            for job, body in zip(change.jobs, change.bodies, strict=True)
        ]
    elif change.kind == "delete":
        rows = [(job_id,) for job_id in change.ids]
        db.executemany(schema.DELETE_TAGS, rows)
        db.executemany(schema.DELETE_JOB, rows)
    elif change.kind == "probe":
        db.execute(schema.PUT_SETTING, ("probe", str(time.time())))
    elif change.kind == "synced":
        db.executemany(schema.MARK_SYNCED, [(session, job_id) for job_id in change.ids])
