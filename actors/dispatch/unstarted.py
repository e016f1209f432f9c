"""Ending a queued job without running it (a cancel, a dependency that failed): no Supervisor owns it."""

from __future__ import annotations

import logging

from procq.actors import transitions
from procq.actors.job import Job

log = logging.getLogger("procq.dispatcher")


def cancel(job: Job, now: str) -> Job:
    """The queued job, CANCELED by request (the Dispatcher records it before answering)."""
    log.debug("job %s: CANCELED while queued", job.id)
    return transitions.canceled_while_queued(job, now)


def fail(job: Job, reason: str, now: str) -> Job:
    """The queued job, FAILED without running because of `reason`."""
    log.info("job %s: FAILED without running: %s", job.id, reason)
    return transitions.failed_without_running(job, reason, now)
