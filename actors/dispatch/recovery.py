"""What the server finds at start, from the store of record: the jobs it must hold, with crashed runs settled."""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procq.actors import osdeps, transitions
from procq.actors.dispatch import retention
from procq.actors.errors import LeaseMoved, StorageError
from procq.actors.job import Job, Status, parse_timestamp
from procq.actors.jobdir import STAGING_PREFIX, JobDir
from procq.actors.keeper import intents, link, protocol, records
from procq.actors.keeper.link import Found, KeeperLink
from procq.actors.settings import Settings
from procq.actors.store import files
from procq.actors.store.base import Store
from procq.actors.store.sqlite import SqliteStore

log = logging.getLogger("procq.recovery")


@dataclass(frozen=True)
class Recovered:
    """What the Dispatcher starts with: the jobs it must hold (queued, in flight, owing a webhook), in
    id order, and how many jobs the store holds per status."""

    jobs: list[Job]
    counts: dict[Status, int]


def recover(settings: Settings, store: Store, now: str, keeper: KeeperLink | None = None) -> Recovered:
    """Load what the Dispatcher needs from the store (indexed queries: no job directory is read).

    A job left IN_PROGRESS is settled by the restart rule (`keeper.link.found`): its exit record, or
    a keeper still running it, leaves it IN_PROGRESS for a Supervisor to conclude or re-adopt; a
    process nobody keeps (matched by pid and start time, or by its run marker) has its tree ended and
    the job is queued again, or FAILED past the restart limit, with the reason, or CANCELED if its
    cancel had been asked for; so is a run of which nothing is left but its spawn intent. An attempt
    with no spawn intent never reached a process: queued again, not counted. An exit code is never
    made up.
    What changed is committed before the server starts. `keeper`: the server's link (one is made if
    None and a job needs it). Blocks. Raises StorageError if the store cannot be read.
    """
    startup = store.startup()
    if startup.rewritten:
        log.warning("rewrote %d meta.json files that lagged behind the store", startup.rewritten)
    counts = dict(startup.counts)
    settled: list[Job] = []
    if startup.running:
        if keeper is None:  # embedded use: a link of our own, just to ask; the Dispatcher makes its own
            keeper = KeeperLink(settings.jobs_dir, settings.grace_s)
        keeper_runs = keeper.running()
        with ThreadPoolExecutor(max_workers=8) as pool:
            settle = lambda job: _settle(job, settings, keeper_runs, now)  # noqa: E731
            settled = list(pool.map(settle, startup.running))
    changed = [after for before, after in zip(startup.running, settled, strict=True) if after != before]
    for before, after in zip(startup.running, settled, strict=True):
        counts[before.status] -= 1
        counts[after.status] = counts.get(after.status, 0) + 1
    if changed:
        try:
            store.update(changed).result(timeout=60)
        except (StorageError, LeaseMoved) as exc:
            # they run (or stay failed) all the same; the next change records them (LeaseMoved: cluster
            # mode, a run the lease sweep gave to another node meanwhile; its Supervisor lets it go then)
            log.error("could not record the recovery of %d jobs: %s", len(changed), exc)
    jobs = {job.id: job for job in (*startup.queued, *settled, *startup.owed)}
    return Recovered(sorted(jobs.values(), key=lambda job: job.id), counts)


def load_jobs(settings: Settings, now: str, keeper: KeeperLink | None = None) -> list[Job]:
    """`recover` on a store opened (and closed) for the purpose: the jobs a restarted Dispatcher holds."""
    store = SqliteStore(settings.jobs_dir)
    try:
        return recover(settings, store, now, keeper).jobs
    finally:
        store.close()


def _settle(job: Job, settings: Settings, keeper_runs: dict[str, Any], now: str) -> Job:
    """Apply the restart rule to one job found IN_PROGRESS; returns it settled (the caller records it)."""
    job_dir = settings.jobs_dir / job.id
    run = protocol.run_id(job.id, job.attempts)
    record = records.read(job_dir, job.attempts)
    alive = False
    if record is None and run not in keeper_runs:
        alive = _alive(job, run)
    # read only when it decides: no record, no keeper runs it, no process is alive
    intended = record is None and run not in keeper_runs and not alive and intents.read(job_dir, job.attempts)
    outcome = link.found(record, keeper_runs, run, alive, bool(intended))
    if outcome is Found.ENDED:
        assert record is not None
        settled = dataclasses.replace(job, pid=record["pid"], pid_started_at=record["pid_started_at"])
    elif outcome is Found.RUNNING:
        kept = keeper_runs[run]
        settled = dataclasses.replace(job, pid=kept["pid"], pid_started_at=kept["pid_started_at"])
    elif outcome is Found.NOT_STARTED:
        settled = transitions.attempt_not_started(job)
    elif job.cancel_requested_at is not None:  # it was being canceled when the server stopped
        if outcome is Found.ORPHANED:
            osdeps.stop_run(job.pid or 0, job.pid_started_at or 0.0, run, settings.grace_s)
        settled = transitions.canceled_at_restart(job, now)
    else:
        if outcome is Found.ORPHANED:
            survivors = osdeps.stop_run(job.pid or 0, job.pid_started_at or 0.0, run, settings.grace_s)
            if survivors:
                log.error("job %s: processes %s of the lost run survived", job.id, survivors)
            reason = "the process that kept the job (procq's keeper) was lost; its processes were ended"
        else:
            reason = "the process that kept the job (procq's keeper) was lost, and the job's end was not recorded"
        settled = transitions.interrupted(job, reason, settings.restart_limit, now)
    log.info("job %s: found %s at start; %s", job.id, outcome.value, settled.status.value)
    return settled


def _alive(job: Job, run: str) -> bool:
    """Is any process of the run alive with nobody keeping it: its root (same pid, same start time),
    or any process carrying its run marker (the root's identity was never recorded, or it escaped)."""
    if job.pid is not None and job.pid_started_at is not None and osdeps.same_process(job.pid, job.pid_started_at):
        return True
    born_after = parse_timestamp(job.started_at).timestamp() - 1.0 if job.started_at else 0.0
    return bool(osdeps.marked(run, born_after))


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
