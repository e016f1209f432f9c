"""Whether a new job may be taken, and storing it durably before its submit is answered."""

from __future__ import annotations

import logging
from pathlib import Path

from procq.actors.dispatch.index import JobTable
from procq.actors.errors import InvalidRequest, QueueFull, ShuttingDown, StorageError
from procq.actors.job import Job, JobRequest, Status
from procq.actors.jobdir import JobDir

log = logging.getLogger("procq.dispatcher")


def admit(request: JobRequest, table: JobTable, accepting: bool, max_queued: int | None) -> None:
    """Raises ShuttingDown, QueueFull (max_queued jobs wait already) or InvalidRequest (`after`
    names a job that does not exist); returns if the request may become a job."""
    if not accepting:
        raise ShuttingDown()
    if max_queued is not None and table.count(Status.IN_QUEUE) >= max_queued:  # O(1): the index counts
        raise QueueFull(max_queued)
    unknown = [dependency for dependency in request.after if dependency not in table]
    if unknown:
        raise InvalidRequest(f"after: there is no job with id {unknown[0]!r}; after lists ids of existing jobs")


def store(job: Job, jobs_dir: Path) -> None:
    """Create the job's directory and meta.json, durably. Raises StorageError, leaving nothing behind."""
    try:
        JobDir(jobs_dir / job.id).create(job)
    except OSError as exc:
        log.error("job %s: could not be stored: %s", job.id, exc)
        raise StorageError("create the job's directory", exc) from exc
    log.debug("job %s: IN_QUEUE args=%s", job.id, list(job.args))
