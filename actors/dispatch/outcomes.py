"""The Dispatcher's answers to the store: what a commit that succeeded or failed means for the jobs."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from procq.actors.dispatch.receipts import carry_on
from procq.actors.job import Job, Status, timestamp

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.alarm import Alarm
    from procq.actors.dispatch.index import JobTable
    from procq.actors.dispatch.launcher import Launcher
    from procq.actors.dispatch.retention import Retention
    from procq.actors.dispatch.scheduler import Scheduler


class CommitOutcomes:
    """The part of the Dispatcher told by the store's writer thread (through commit callbacks) and by
    Supervisors about records: messages nobody waits on. A mixin: it works on the Dispatcher's state."""

    if TYPE_CHECKING:
        _table: JobTable
        _scheduler: Scheduler
        _launcher: Launcher
        _retention: Retention
        _alarm: Alarm
        _held_until: float

        def _now(self) -> datetime: ...

        def _pump(self) -> None: ...

        def _enqueue_or_end(self, job: Job) -> None: ...

        def _forget(self, job: Job) -> None: ...

    @carry_on
    def run_over(self, job_id: str) -> None:
        """A job's process is gone (its outcome is being committed; `job_ended` follows): its worker
        slot may take the next job now, so that job's attempt is committed with this one's end. Not
        when jobs wait for it: they get their turn with `job_ended`, once its outcome is known."""
        if self._scheduler.has_dependents(job_id):
            return
        self._scheduler.ended(job_id)
        self._pump()

    @carry_on
    def let_go(self, job_id: str) -> None:
        """Cluster mode, from a Supervisor: the job's record was refused because its lease moved on
        (this node was cut off past its lease; another node runs the job now). Its slot is free and
        the job is no longer held here, without concluding it: no webhook, no dependents failed, no
        state written; the node that runs it now does all that, and questions go to the database."""
        self._launcher.ended(job_id)
        self._scheduler.ended(job_id)
        self._table.release(job_id)
        self._pump()

    @carry_on
    def run_not_started(self, job: Job) -> None:
        """A Supervisor could not record the attempt (the store failed, or the job's creation did):
        nothing was started. The job waits its turn again, and nothing starts for a second."""
        self._launcher.ended(job.id)
        self._scheduler.ended(job.id)
        if job.id in self._table and self._table[job.id].status is Status.IN_QUEUE:
            self._scheduler.remove(job.id)
            self._enqueue_or_end(job)
        self._held_until = time.monotonic() + 1.0
        self._alarm.at(timestamp(self._now() + timedelta(seconds=1.0)))

    @carry_on
    def not_created(self, job_ids: list[str]) -> None:
        """The store could not commit these new jobs; their submit was answered with an error."""
        for job_id in job_ids:
            job = self._table.get(job_id)
            if job is not None:
                self._forget(job)

    @carry_on
    def cancel_not_recorded(self, job: Job) -> None:
        """The store could not commit a queued job's cancel: it keeps its last durable state, queued."""
        if job.id in self._table and self._table[job.id].status is Status.CANCELED:
            self._table.put(job)
            self._enqueue_or_end(job)
            self._pump()

    @carry_on
    def deleted(self, jobs: list[Job], removed: threading.Event, error: BaseException | None) -> None:
        """The deletion of these jobs is committed (or failed): forget them, remove their directories."""
        if error is not None:
            removed.set()
            return
        for job in jobs:
            self._forget(job)
        self._retention.remove(jobs, removed)

    @carry_on
    def swept(self, expired: list[Job], _: None, error: BaseException | None) -> None:
        for job in expired if error is None else []:
            self._forget(job)
        self._retention.swept(expired if error is None else [])
