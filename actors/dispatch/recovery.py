"""What the server finds at start, from the store of record: the jobs it must hold, with crashed runs settled."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from procq.actors import osdeps
from procq.actors.dispatch import retention
from procq.actors.errors import StorageError
from procq.actors.job import Job, Status
from procq.actors.jobdir import STAGING_PREFIX, JobDir
from procq.actors.settings import Settings
from procq.actors.store import files
from procq.actors.store.base import Store
from procq.actors.store.sqlite import SqliteStore
from procq.actors.transitions import canceled_at_restart, interrupted

log = logging.getLogger("procq.recovery")


@dataclass(frozen=True)
class Recovered:
    """What the Dispatcher starts with: the jobs it must hold (queued, settled after a crash, owing a
    webhook), in id order, and how many jobs the store holds per status."""

    jobs: list[Job]
    counts: dict[Status, int]


def recover(settings: Settings, store: Store, now: str) -> Recovered:
    """Load what the Dispatcher needs from the store (indexed queries: no job directory is read).

    A job left IN_PROGRESS by a crash has its orphaned process tree ended (matched by pid and start
    time, so a reused pid is spared) and is queued again, or FAILED past the restart limit; one whose
    cancel had been asked for ends CANCELED. Those changes are committed before the server starts.
    Blocks: call it before the server starts. Raises StorageError if the store cannot be read.
    """
    startup = store.startup()
    if startup.rewritten:
        log.warning("rewrote %d meta.json files that lagged behind the store", startup.rewritten)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: _end_orphans(job, settings.grace_s), startup.running))
    counts = dict(startup.counts)
    settled = []
    for job in startup.running:
        if job.cancel_requested_at is not None:
            after = canceled_at_restart(job, now)
        else:
            after = interrupted(job, "interrupted by a crash of the server", settings.restart_limit, now)
        log.info("job %s: recovered after a crash as %s", job.id, after.status.value)
        counts[job.status] -= 1
        counts[after.status] = counts.get(after.status, 0) + 1
        settled.append(after)
    if settled:
        try:
            store.update(settled).result(timeout=60)
        except StorageError as exc:  # they run (or stay failed) all the same; the next change records them
            log.error("could not record the recovery of %d jobs: %s", len(settled), exc)
    jobs = {job.id: job for job in (*startup.queued, *settled, *startup.owed)}
    return Recovered(sorted(jobs.values(), key=lambda job: job.id), counts)


def load_jobs(settings: Settings, now: str) -> list[Job]:
    """`recover` on a store opened (and closed) for the purpose: the jobs a restarted Dispatcher holds."""
    store = SqliteStore(settings.jobs_dir)
    try:
        return recover(settings, store, now).jobs
    finally:
        store.close()


def _end_orphans(job: Job, grace_s: float) -> None:
    if job.pid is not None and job.pid_started_at is not None:
        survivors = osdeps.stop_tree(job.pid, job.pid_started_at, grace_s)
        if survivors:
            log.error("job %s: processes %s of the crashed run survived", job.id, survivors)


def sweep_leftovers(jobs_dir: Path, older_than_s: float = 60.0) -> int:
    """Remove what writes cut short by a crash left behind (meta.json.*.tmp files, .new-<id>/ job
    directories never renamed into place, so never acknowledged); returns how many.

    Run in the background after start (it lists every job directory, too slow to wait for). Only
    entries older than `older_than_s` go: a younger one may be a write in progress right now.
    """
    removed = 0
    cutoff = time.time() - older_than_s
    for leftover in [*jobs_dir.glob(f"{STAGING_PREFIX}*"), *jobs_dir.glob("*/meta.json.*.tmp")]:
        try:
            if leftover.lstat().st_mtime < cutoff:
                if leftover.is_dir() and not leftover.is_symlink():
                    JobDir(leftover).remove_partial()
                else:
                    leftover.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or in use: the next start tries again
    if removed:
        log.info("removed %d leftovers of writes interrupted by a crash", removed)
    return removed


def sweep_deleted(jobs_dir: Path, store: Store) -> int:
    """Move to the trash the job directories whose job the store no longer has: a deletion committed
    just before a crash, before its directory was moved away (it must not come back in a rebuild).
    Only directories with a readable meta.json go; one that is unreadable was skipped by a rebuild and
    is left alone. Run in the background after start; returns how many."""
    gone: list[Job] = []
    warnings: list[str] = []
    for job in files.scan(jobs_dir, warnings):
        if store.get(job.id) is None:
            gone.append(job)
    if gone:
        log.warning("removing %d job directories whose deletion was committed before a crash", len(gone))
        retention.remove_jobs(jobs_dir, gone, lambda postponed: None)
    return len(gone)
