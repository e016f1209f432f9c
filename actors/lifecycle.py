"""One structured log line per job lifecycle event (submitted, started, finished, requeued, deleted)."""

from __future__ import annotations

import logging
from typing import Any

from procq.actors.job import Job, Status

log = logging.getLogger("procq.jobs")


class LifecycleLog:
    """A Watcher of the Dispatcher: logs each state change with `job_id`, `status` and `event` as
    record attributes, which the JSON log format (--log-format json) writes as fields."""

    def job_changed(self, before: Job | None, after: Job) -> None:
        if before is None:
            event, detail = "submitted", f"args={list(after.args)}"
        elif before.status is after.status:
            return  # webhook delivery updates are logged by the Supervisor
        elif after.status is Status.IN_PROGRESS:
            event, detail = "started", f"pid={after.pid} attempt={after.attempts}"
        elif after.status is Status.IN_QUEUE:
            event, detail = "requeued", f"reason={after.interrupted!r}"
        else:
            event, detail = "finished", f"exit_code={after.exit_code} error={after.error!r}"
        self._log(after, event, detail)

    def job_removed(self, job: Job) -> None:
        self._log(job, "deleted", "")

    @staticmethod
    def _log(job: Job, event: str, detail: str) -> None:
        extra: dict[str, Any] = {"job_id": job.id, "status": job.status.value, "event": event}
        log.info("job %s %s %s %s", job.id, job.status.value, event, detail, extra=extra)
