"""What the server finds in its jobs directory at start: every job, with crashed runs settled."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from procq.actors import osdeps, transitions
from procq.actors.job import Job, Status, is_job_id, parse_timestamp
from procq.actors.jobdir import STAGING_PREFIX, JobDir
from procq.actors.keeper import link, protocol, records
from procq.actors.keeper.link import Found, KeeperLink
from procq.actors.settings import Settings

log = logging.getLogger("procq.recovery")


def load_jobs(settings: Settings, now: str, keeper: KeeperLink | None = None) -> list[Job]:
    """Read every job under settings.jobs_dir, sorted by id (= submission order).

    A job left IN_PROGRESS is settled by the restart rule (`keeper.link.found`): its exit record, or
    a keeper still running it, leaves it IN_PROGRESS for a Supervisor to conclude or re-adopt; a
    process nobody keeps (matched by pid and start time, or by its run marker) has its tree ended and
    the job is queued again, or FAILED past the restart limit, with the reason; so is a run of which
    nothing is left. An exit code is never made up. Entries that are not jobs, or whose meta.json is
    unreadable, are skipped with a warning. `keeper`: the server's link (one is made if None and a job
    needs it). Blocks: call it before the server starts.
    """
    found: list[Job] = []
    for entry in os.scandir(settings.jobs_dir):
        job = _read_entry(entry)
        if job is not None:
            found.append(job)
    cut_short = [job for job in found if job.status is Status.IN_PROGRESS]
    if not cut_short:
        return sorted(found, key=lambda job: job.id)
    if keeper is None:  # embedded use: a link of our own, just to ask; the Dispatcher makes its own
        keeper = KeeperLink(settings.jobs_dir, settings.grace_s)
    keeper_runs = keeper.running()
    keeper_since = keeper.keeper_started_at()
    with ThreadPoolExecutor(max_workers=8) as pool:
        settled = dict(pool.map(lambda job: _settle(job, settings, keeper_runs, keeper_since, now), cut_short))
    return sorted((settled.get(job.id, job) for job in found), key=lambda job: job.id)


def _settle(
    job: Job, settings: Settings, keeper_runs: dict[str, Any], keeper_since: str | None, now: str
) -> tuple[str, Job]:
    """Apply the restart rule to one job found IN_PROGRESS; writes what changed to its meta.json."""
    job_dir = settings.jobs_dir / job.id
    run = protocol.run_id(job.id, job.attempts)
    record = records.read(job_dir, job.attempts)
    alive = False
    if record is None and run not in keeper_runs:
        alive = _alive(job, run)
    older = keeper_since is not None and job.started_at is not None and keeper_since < job.started_at
    outcome = link.found(record, keeper_runs, run, alive, older)
    if outcome is Found.ENDED:
        assert record is not None
        settled = dataclasses.replace(job, pid=record["pid"], pid_started_at=record["pid_started_at"])
    elif outcome is Found.RUNNING:
        kept = keeper_runs[run]
        settled = dataclasses.replace(job, pid=kept["pid"], pid_started_at=kept["pid_started_at"])
    elif outcome is Found.NOT_STARTED:
        settled = transitions.attempt_not_started(job)
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
    if settled != job:
        try:
            JobDir(job_dir).write(settled)
        except OSError as exc:
            log.error("job %s: could not record its recovery: %s", job.id, exc)
    return job.id, settled


def _alive(job: Job, run: str) -> bool:
    """Is any process of the run alive with nobody keeping it: its root (same pid, same start time),
    or any process carrying its run marker (the root's identity was never recorded, or it escaped)."""
    if job.pid is not None and job.pid_started_at is not None and osdeps.same_process(job.pid, job.pid_started_at):
        return True
    born_after = parse_timestamp(job.started_at).timestamp() - 1.0 if job.started_at else 0.0
    return bool(osdeps.marked(run, born_after))


def _read_entry(entry: os.DirEntry[str]) -> Job | None:
    # Plain strings, not pathlib: this runs for every job at start (100,000 jobs must load in seconds).
    if entry.name.startswith("."):  # the server's own files: .lock, .trash, health probes
        return None
    if not is_job_id(entry.name) or not entry.is_dir(follow_symlinks=False):
        log.warning("skipping %r in the jobs directory: not a job directory", entry.name)
        return None
    try:
        job = Job.from_dict(orjson.loads(osdeps.read_bytes(os.path.join(entry.path, "meta.json"))))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("skipping job directory %s: unreadable meta.json (%s)", entry.name, exc)
        return None
    if job.id != entry.name:
        log.warning("skipping job directory %s: its meta.json belongs to job %s", entry.name, job.id)
        return None
    return job


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
