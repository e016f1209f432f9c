"""What the server finds in its jobs directory at start: every job, with crashed runs settled."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from procq.actors import osdeps
from procq.actors.job import Job, Status, is_job_id
from procq.actors.jobdir import STAGING_PREFIX, JobDir
from procq.actors.settings import Settings
from procq.actors.transitions import interrupted

log = logging.getLogger("procq.recovery")


def load_jobs(settings: Settings, now: str) -> list[Job]:
    """Read every job under settings.jobs_dir, sorted by id (= submission order).

    A job left IN_PROGRESS by a crash has its orphaned process tree ended (matched by pid and
    start time, so a reused pid is spared) and is queued again, or FAILED past the restart limit.
    Entries that are not jobs, or whose meta.json is unreadable, are skipped with a warning.
    Blocks: call it before the server starts.
    """
    found: list[Job] = []
    for entry in os.scandir(settings.jobs_dir):
        job = _read_entry(entry)
        if job is not None:
            found.append(job)
    cut_short = [job for job in found if job.status is Status.IN_PROGRESS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: _end_orphans(job, settings.grace_s), cut_short))
    settled: dict[str, Job] = {}
    for job in cut_short:
        job = interrupted(job, "interrupted by a crash of the server", settings.restart_limit, now)
        try:
            JobDir(settings.jobs_dir / job.id).write(job)
        except OSError as exc:
            log.error("job %s: could not record its recovery: %s", job.id, exc)
        log.info("job %s: recovered after a crash as %s", job.id, job.status.value)
        settled[job.id] = job
    return sorted((settled.get(job.id, job) for job in found), key=lambda job: job.id)


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
