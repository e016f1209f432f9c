"""The Dispatcher actor: the index of every job, the queue, the worker slots and webhook scheduling."""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pykka

from actors import webhook
from actors.errors import JobConflict, JobNotFound, QueueFull, ShuttingDown, StorageError
from actors.job import Delivery, IdGenerator, Job, JobRequest, Status, parse_timestamp, timestamp, utc_now
from actors.jobdir import JobDir
from actors.settings import Settings
from actors.supervisor import SendWebhook, Spawn, Supervisor

log = logging.getLogger("procq.dispatcher")


class Dispatcher(pykka.ThreadingActor):
    """Decides what runs when, and answers every question about jobs from memory.

    State (its thread only): the index id -> Job, a FIFO heap of queued ids (ids sort by creation),
    the Supervisors of running jobs with their `finished` events, and a heap of due webhook deliveries.
    Accepts `submit`, `get`, `cancel`, `shutdown` from API threads (ask, `.get(timeout=...)`), and
    `job_started`, `job_ended`, `delivery_ended`, `wake` from Supervisors and its timer (defer).
    A Supervisor exists only while its job runs or a delivery is in flight, so 10,000 queued jobs
    cost 10,000 index entries, not threads. The Dispatcher writes a job's meta.json only while the
    job has no Supervisor (creation, cancel while queued).
    """

    def __init__(
        self,
        settings: Settings,
        jobs: Iterable[Job] = (),
        new_id: Callable[[], str] | None = None,
        now: Callable[[], datetime] = utc_now,
        spawn: Spawn | None = None,
        send_webhook: SendWebhook = webhook.send,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._new_id = new_id or IdGenerator()
        self._now = now
        self._spawn = spawn
        self._send_webhook = send_webhook
        self._jobs: dict[str, Job] = {job.id: job for job in jobs}
        self._queue = [job.id for job in self._jobs.values() if job.status is Status.IN_QUEUE]
        heapq.heapify(self._queue)
        self._running: dict[str, tuple[Any, threading.Event]] = {}
        self._deliveries = [
            (job.webhook_delivery.next_attempt_at or "", job.id)
            for job in self._jobs.values()
            if job.status.terminal and job.webhook_delivery and job.webhook_delivery.state == "pending"
        ]
        heapq.heapify(self._deliveries)
        self._delivering: set[str] = set()
        self._timer: threading.Timer | None = None
        self._timer_due = ""
        self._accepting = True

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()
        self._pump()

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    # --- asked by the API ------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> Job:
        """Create the job on disk (durably) and queue it. Raises ShuttingDown, QueueFull or StorageError."""
        if not self._accepting:
            raise ShuttingDown()
        self._check_room()
        job = Job(
            id=self._new_id(),
            args=request.args,
            mime_type=request.mime_type,
            webhook=request.webhook,
            owner=request.owner,
            enqueued_at=timestamp(self._now()),
        )
        try:
            self._dir(job).create(job)
        except OSError as exc:
            log.error("job %s: could not be stored: %s", job.id, exc)
            raise StorageError("create the job's directory", exc) from exc
        log.info("job %s: IN_QUEUE args=%s", job.id, list(job.args))
        self._jobs[job.id] = job
        heapq.heappush(self._queue, job.id)
        self._pump()
        return job

    def get(self, job_id: str) -> Job:
        """The job as it is now. Raises JobNotFound."""
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def ping(self) -> bool:
        """Answers at once: shows the Dispatcher is alive and its inbox moving (GET /health)."""
        return True

    def cancel(self, job_id: str) -> threading.Event:
        """Cancel a queued or running job. Returns an event set once it has ended (already set for a
        queued job); the caller then reads the outcome with `get`, because a running job may have
        finished on its own meanwhile. Raises JobNotFound, JobConflict or StorageError."""
        if job_id in self._running:
            supervisor, finished = self._running[job_id]
            try:
                supervisor.cancel.defer()
            except pykka.ActorDeadError:
                pass  # it just ended on its own; job_ended is already on its way to us
            return finished
        job = self.get(job_id)
        if job.status is not Status.IN_QUEUE:
            raise JobConflict(job.id, job.status.value, "cancel", "IN_QUEUE or IN_PROGRESS")
        canceled = dataclasses.replace(
            job,
            status=Status.CANCELED,
            error="canceled by request before it started",
            completed_at=timestamp(self._now()),
            webhook_delivery=Delivery() if job.webhook else None,
        )
        try:
            self._dir(job).write(canceled)
        except OSError as exc:
            raise StorageError("record the cancel", exc) from exc
        log.info("job %s: CANCELED while queued", job.id)
        self._ended(canceled)  # its id stays in the heap; _pump skips it
        done = threading.Event()
        done.set()
        return done

    def shutdown(self) -> list[threading.Event]:
        """Stop taking jobs and interrupt running ones (they are queued again for the next start).
        Returns their `finished` events for the caller to wait on."""
        self._accepting = False
        for supervisor, _ in self._running.values():
            try:
                supervisor.interrupt.defer()
            except pykka.ActorDeadError:
                pass
        return [finished for _, finished in self._running.values()]

    # --- told by Supervisors and the timer -------------------------------------------------------

    def job_started(self, job: Job) -> None:
        self._jobs[job.id] = job

    def job_ended(self, job: Job) -> None:
        """A run is over: the job is terminal, or back IN_QUEUE after a shutdown interrupted it."""
        self._running.pop(job.id, None)
        self._ended(job)

    def delivery_ended(self, job: Job) -> None:
        self._delivering.discard(job.id)
        self._ended(job)

    def wake(self) -> None:
        """The delivery timer fired: start what is due."""
        self._timer = None
        self._pump()

    # --- inside ----------------------------------------------------------------------------------

    def _check_room(self) -> None:
        limit = self._settings.max_queued
        # The heap also holds ids canceled while queued, so its length is an upper bound: count
        # exactly only near the limit, and submit stays O(1) the rest of the time.
        if limit is not None and len(self._queue) >= limit:
            waiting = sum(1 for job_id in self._queue if self._jobs[job_id].status is Status.IN_QUEUE)
            if waiting >= limit:
                raise QueueFull(limit)

    def _ended(self, job: Job) -> None:
        self._jobs[job.id] = job
        delivery = job.webhook_delivery
        if job.status.terminal and delivery is not None and delivery.state == "pending":
            heapq.heappush(self._deliveries, (delivery.next_attempt_at or "", job.id))
        self._pump()

    def _pump(self) -> None:
        """Start queued jobs while worker slots are free, and due deliveries while delivery slots are."""
        while self._accepting and self._queue and len(self._running) < self._settings.workers:
            job = self._jobs[heapq.heappop(self._queue)]
            if job.status is Status.IN_QUEUE:  # else it was canceled while queued
                finished = threading.Event()
                supervisor = self._supervisor(job, finished)
                self._running[job.id] = (supervisor, finished)
                supervisor.run.defer()
        now = timestamp(self._now())
        while self._accepting and self._deliveries and len(self._delivering) < self._settings.webhook_concurrency:
            due, job_id = self._deliveries[0]
            if due > now:
                self._arm_timer(due)
                break
            heapq.heappop(self._deliveries)
            self._delivering.add(job_id)
            self._supervisor(self._jobs[job_id], threading.Event()).deliver.defer()

    def _supervisor(self, job: Job, finished: threading.Event) -> Any:
        return Supervisor.start(
            job,
            self._settings,
            self._self,
            finished,
            spawn=self._spawn,
            now=self._now,
            send_webhook=self._send_webhook,
        ).proxy()

    def _arm_timer(self, due: str) -> None:
        if self._timer is not None and self._timer_due <= due:
            return  # it fires first, and the pump it triggers arms the next
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        delay = max(0.0, (parse_timestamp(due) - self._now()).total_seconds())
        self._timer = threading.Timer(delay, _wake, args=(self._self,))
        self._timer.daemon = True
        self._timer.start()

    def _dir(self, job: Job) -> JobDir:
        return JobDir(self._settings.jobs_dir / job.id)


def _wake(dispatcher: Any) -> None:
    try:
        dispatcher.wake.defer()
    except pykka.ActorDeadError:
        pass
