"""Deleting finished jobs, by request (DELETE /jobs/{id}) and by age (retention): which, when, and the
removal of their directories on a helper thread, safely."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from procq.actors import osdeps
from procq.actors.errors import StorageError
from procq.actors.job import DeliveryState, Job, is_job_id, timestamp
from procq.actors.mailbox import report
from procq.actors.settings import Settings
from procq.actors.store.base import Store

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.retention")

TRASH = ".trash"  # inside the jobs directory; a leading dot keeps recovery away from it
BATCH = 1000  # jobs removed per sweep at most, so one sweep never holds the Dispatcher long


class Retention:
    """The Dispatcher's deleting of jobs. A plain object: only the Dispatcher's thread touches it.

    A sweep timer looks for finished jobs past the retention, a batch at a time (soon again while
    batches are full). Directories go on a helper thread (`remove_jobs`); those Windows would not let
    go of yet come back through `postponed` and are retried at the next sweep.
    """

    def __init__(
        self, settings: Settings, dispatcher: DispatcherProxy, store: Store, now: Callable[[], datetime]
    ) -> None:
        self._jobs_dir = settings.jobs_dir
        self._retention_s = settings.retention_s
        self._dispatcher = dispatcher
        self._store, self._now = store, now  # read by the sweep timer's thread (`find_expired`)
        self._postponed: list[Job] = []  # deleted jobs whose directory could not be removed yet
        # cluster mode: this node's directories of jobs another node deleted (asked on the helper thread)
        self.leftovers: Callable[[], list[Job]] | None = None
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        self._arm(1.0)  # soon after start: empty the trash a crash left, expire what aged meanwhile

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def expired(self, found: list[Job], cutoff: str | None, delivering: Container[str]) -> list[Job]:
        """The finished jobs the sweep that just fired deletes (at most a batch): those the store found
        (`find_expired`, on the timer's thread) whose webhook is not owed."""
        self._timer = None
        return [] if cutoff is None else expired(found, cutoff, delivering, BATCH)

    def swept(self, expired: list[Job]) -> None:
        """The expired jobs are forgotten: remove their directories and those postponed, re-arm."""
        retry, self._postponed = self._postponed, []
        self.remove(expired + retry, leftovers=self.leftovers)
        self._arm(0.1 if len(expired) >= BATCH else sweep_interval(self._retention_s))

    def remove(
        self,
        jobs: list[Job],
        done: threading.Event | None = None,
        leftovers: Callable[[], list[Job]] | None = None,
    ) -> threading.Event:
        """Remove the directories of jobs already forgotten (and those `leftovers` finds), on a helper
        thread. Returns an event (or sets `done`) once they are gone (or their removal postponed)."""
        done = done or threading.Event()
        on_removed = functools.partial(_removed, self._dispatcher, jobs, done)
        args = (self._jobs_dir, jobs, on_removed)
        threading.Thread(target=remove_jobs, args=args, kwargs={"leftovers": leftovers}, daemon=True).start()
        return done

    def postponed(self, jobs: list[Job]) -> None:
        self._postponed.extend(jobs)

    def _arm(self, delay_s: float) -> None:
        args = (self._store, self._retention_s, self._now, self._dispatcher)
        self._timer = threading.Timer(delay_s, find_expired, args=args)
        self._timer.daemon = True
        self._timer.start()


def find_expired(store: Store, retention_s: float, now: Callable[[], datetime], dispatcher: DispatcherProxy) -> None:
    """The sweep timer's thread: ask the store for finished jobs past the retention here, never on the
    Dispatcher's thread (a database that is away must not stall it), then hand them to the Dispatcher.
    A read that fails finds none: the sweep is armed again as after any other."""
    found: list[Job] = []
    cutoff = None
    if retention_s > 0:
        cutoff = timestamp(now() - timedelta(seconds=retention_s))
        try:
            found = store.expired(cutoff, BATCH)
        except StorageError as exc:
            log.warning("retention: could not look for expired jobs: %s", exc)
    report(lambda: dispatcher.sweep.defer(found, cutoff))


def _removed(dispatcher: DispatcherProxy, jobs: list[Job], done: threading.Event, postponed_ids: list[str]) -> None:
    postponed = [job for job in jobs if job.id in postponed_ids]
    if postponed:
        report(lambda: dispatcher.dirs_removed.defer(postponed))
    done.set()


def sweep_interval(retention_s: float) -> float:
    """How often the Dispatcher looks for expired jobs: a tenth of the retention, 0.5 s to 60 s."""
    return min(60.0, max(0.5, retention_s / 10)) if retention_s > 0 else 60.0


def expired(finished: Iterable[Job], cutoff: str, delivering: Container[str], limit: int) -> list[Job]:
    """Up to `limit` of the `finished` jobs completed before `cutoff` (a timestamp; they compare as
    strings) whose webhook is not owed: one still pending or in flight keeps its job."""
    found: list[Job] = []
    for job in finished:
        delivery = job.webhook_delivery
        if job.completed_at is None or job.completed_at >= cutoff or job.id in delivering:
            continue
        if delivery is not None and delivery.state is DeliveryState.PENDING:
            continue
        found.append(job)
        if len(found) >= limit:
            break
    return found


def remove_jobs(
    jobs_dir: Path,
    jobs: list[Job],
    report: Callable[[list[str]], None],
    sleep: Callable[[float], None] = time.sleep,
    leftovers: Callable[[], list[Job]] | None = None,
) -> None:
    """Helper thread: remove each job's directory, then call `report(postponed_ids)` with the ids
    whose directory could not be moved away yet (Windows: a file still open), to retry later.
    `leftovers` (cluster mode) finds more directories to remove, of jobs gone from the database.

    A directory is first renamed into jobs/.trash/ (atomic: the job vanishes whole, and a restart
    never finds half a job), then the trash is emptied. Never follows a symlink, never leaves jobs_dir.
    """
    trash = jobs_dir / TRASH
    postponed: list[str] = []
    if leftovers is not None:
        try:
            named = {job.id for job in jobs}
            jobs = jobs + [job for job in leftovers() if job.id not in named]
        except Exception as exc:  # the database is away: the next sweep looks again
            log.warning("could not look for directories of jobs deleted elsewhere: %s", exc)
    for job in jobs:
        if job.pid is not None and job.pid_started_at is not None:
            # A grandchild that outlived the job would keep its files open, and Windows refuses to
            # move or delete a directory with an open file in it.
            osdeps.stop_tree(job.pid, job.pid_started_at, 0.0)
        if not _move_to_trash(jobs_dir, trash, job.id, sleep):
            postponed.append(job.id)
    empty_trash(trash, sleep)
    report(postponed)


def empty_trash(trash: Path, sleep: Callable[[float], None] = time.sleep) -> None:
    """Delete what earlier removals (or a crash in the middle of one) left in jobs/.trash/."""
    try:
        entries = list(os.scandir(trash))
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot read %s: %s", trash, exc)
        return
    for entry in entries:
        try:
            osdeps.retry_transient(functools.partial(_delete_entry, entry.path), sleep=sleep, first_s=0.01, max_s=0.2)
        except OSError as exc:
            log.warning("could not delete %s yet (%s); retrying at the next sweep", entry.path, exc)


def _move_to_trash(jobs_dir: Path, trash: Path, job_id: str, sleep: Callable[[float], None]) -> bool:
    if not is_job_id(job_id):  # never build a path from anything else
        log.error("refusing to remove %r: not a job id", job_id)
        return True
    path = jobs_dir / job_id
    try:
        plain = osdeps.is_plain_dir(path)
        if not plain and not os.path.lexists(path):
            return True  # already gone
    except OSError as exc:
        log.warning("job %s: cannot inspect its directory, retrying later: %s", job_id, exc)
        return False
    if not plain:  # a symlink, junction or file planted there: not ours to follow or delete
        log.error("job %s: %s is not a plain directory; left alone", job_id, path)
        return True
    try:
        trash.mkdir(exist_ok=True)
        osdeps.replace_file(path, trash / f"{job_id}-{uuid.uuid4().hex[:8]}")  # retries while Windows holds it
    except OSError as exc:
        log.warning("job %s: could not remove its directory yet (%s); retrying at the next sweep", job_id, exc)
        return False
    return True


def _delete_entry(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # rmtree removes symlinks inside without following them
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass  # gone already: nothing left to do
