"""Ending a queued job without running it (a cancel, a dependency that failed): the Dispatcher writes it."""

from __future__ import annotations

import logging
from pathlib import Path

from procq.actors import transitions
from procq.actors.errors import StorageError
from procq.actors.job import Job
from procq.actors.jobdir import JobDir

log = logging.getLogger("procq.dispatcher")


def cancel(job: Job, jobs_dir: Path, now: str) -> Job:
    """The queued job, CANCELED and recorded in its meta.json (no Supervisor owns it). Raises
    StorageError if that cannot be written: the job then stays queued."""
    canceled = transitions.canceled_while_queued(job, now)
    try:
        JobDir(jobs_dir / job.id).write(canceled)
    except OSError as exc:
        raise StorageError("record the cancel", exc) from exc
    log.debug("job %s: CANCELED while queued", job.id)
    return canceled


def fail(job: Job, reason: str, jobs_dir: Path, now: str) -> Job:
    """The queued job, FAILED without running because of `reason`. A meta.json that cannot be written
    is logged: the job has failed all the same (its dependency will not come back)."""
    failed = transitions.failed_without_running(job, reason, now)
    try:
        JobDir(jobs_dir / job.id).write(failed)
    except OSError as exc:
        log.error("job %s: could not record its failure: %s", job.id, exc)
    log.info("job %s: FAILED without running: %s", job.id, reason)
    return failed
