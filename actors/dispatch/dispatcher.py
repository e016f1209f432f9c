"""The Dispatcher actor: routes every request about jobs to the helper object that owns the answer."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import pykka
from procq.actors import transitions, webhook
from procq.actors.dispatch import admission, unstarted
from procq.actors.dispatch.alarm import Alarm
from procq.actors.dispatch.deliveries import Deliveries
from procq.actors.dispatch.idempotency import Idempotency
from procq.actors.dispatch.index import JobTable
from procq.actors.dispatch.launcher import Launcher
from procq.actors.dispatch.retention import Retention
from procq.actors.dispatch.scheduler import Scheduler
from procq.actors.errors import JobConflict, JobNotFound
from procq.actors.events import Watcher
from procq.actors.job import IdGenerator, Job, JobRequest, Status, timestamp, utc_now
from procq.actors.settings import Settings
from procq.actors.supervise.spawn import Spawn
from procq.actors.webhook import SendWebhook

log = logging.getLogger("procq.dispatcher")


class Dispatcher(pykka.ThreadingActor):
    """Decides what runs when, and answers every question about jobs from memory.

    State (its thread only), each part a plain helper object: the JobTable (jobs, index, watchers),
    the Scheduler (queues, aging, run_at, dependencies, worker slots), the Launcher (Supervisors of
    running jobs), the Deliveries (webhooks owed), Retention (deleting), Idempotency, the Alarm.
    Asked by API threads (`.get(timeout=...)`); told by Supervisors, timers and itself (defer).
    A Supervisor exists only while its job runs or a delivery is in flight, so 10,000 queued jobs
    cost 10,000 table entries, not threads. The Dispatcher writes a job's meta.json only while the
    job has no Supervisor (creation, cancel while queued, failing a job that cannot run).
    """

    def __init__(
        self,
        settings: Settings,
        jobs: Iterable[Job] = (),
        new_id: Callable[[], str] | None = None,
        now: Callable[[], datetime] = utc_now,
        spawn: Spawn | None = None,
        send_webhook: SendWebhook = webhook.send,
        watchers: Sequence[Watcher] = (),
    ) -> None:
        super().__init__()
        self._settings = settings
        self._new_id = new_id or IdGenerator()
        self._now = now
        self._spawn = spawn
        self._send_webhook = send_webhook
        self._table = JobTable(jobs, watchers)
        self._scheduler = Scheduler(settings.workers, settings.aging_s, settings.queues)  # filled in on_start
        self._idempotency = Idempotency(self._table.values())
        self._deliveries = Deliveries(self._table.values(), settings.webhook_concurrency)
        self._accepting = True

    def on_start(self) -> None:
        self._self: DispatcherProxy = self.actor_ref.proxy()
        self._alarm = Alarm(self._self.wake.defer, self._now)
        self._launcher = Launcher(self._settings, self._self, self._spawn, self._now, self._send_webhook)
        self._retention = Retention(self._settings, self._self)
        for job in sorted(self._table.values(), key=lambda job: job.id):
            if job.status is Status.IN_QUEUE:
                self._enqueue(job)
        self._pump()
        self._retention.start()

    def on_stop(self) -> None:
        self._alarm.cancel()
        self._retention.stop()

    # --- asked by the API ------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> Job:
        """Create the job on disk (durably) and queue it. Raises ShuttingDown, QueueFull, InvalidRequest or
        StorageError."""
        return self._submit(request)

    def submit_once(self, request: JobRequest, key_sha256: str, request_sha256: str) -> tuple[Job, bool]:
        """Submit under an Idempotency-Key (its hash): (new job, True), or (the job the key made in the last
        24 h, False). Raises IdempotencyConflict if that job had a different body, or what `submit` raises."""
        original = self._idempotency.replay(key_sha256, request_sha256, self._table.get, self._now())
        if original is not None:
            return original, False
        job = self._submit(request, idempotency_key_sha256=key_sha256, request_sha256=request_sha256)
        self._idempotency.remember(key_sha256, job.id)
        return job, True

    def rerun(self, job_id: str, owner: str | None = None) -> Job:
        """Submit a finished job's request again as a new job naming it in `rerun_of`, owned by `owner`.
        Raises JobNotFound, JobConflict (not finished yet) and whatever `submit` raises."""
        job = self.get(job_id)
        if not job.status.terminal:
            raise JobConflict(job.id, job.status.value, "rerun", "COMPLETED, FAILED or CANCELED")
        return self._submit(dataclasses.replace(transitions.rerun_request(job), owner=owner), rerun_of=job.id)

    def get(self, job_id: str) -> Job:
        """The job as it is now. Raises JobNotFound."""
        job = self._table.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list_jobs(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of jobs newest first below the cursor `before` (ids sort by creation, so paging while
        jobs are added neither skips nor repeats one), and the next cursor or None. Returns at once."""
        return self._table.page(statuses, tag, before, limit, owner)

    def stats(self) -> dict[str, Any]:
        """Counts per status and worker slots in use, from memory (GET /stats, /metrics)."""
        return {
            "counts": {status.value: self._table.count(status) for status in Status},
            "workers": {"busy": self._scheduler.busy(), "total": self._settings.workers},
        }

    def ping(self) -> bool:
        """Answers at once: shows the Dispatcher is alive and its inbox moving (GET /health)."""
        return True

    def queues(self) -> list[dict[str, Any]]:
        """Every queue's settings and counts (GET /queues)."""
        return self._scheduler.views()

    def set_queue(self, name: str, parallelism: int | None = None, paused: bool | None = None) -> dict[str, Any]:
        """Change (or create) a queue: its parallelism and whether it is paused. Returns its view."""
        view = self._scheduler.configure(name, parallelism, paused)
        log.info("queue %s: parallelism=%s paused=%s", name, view["parallelism"], view["paused"])
        self._pump()  # a resumed or widened queue may start jobs now
        return self._scheduler.configure(name)

    def cancel(self, job_id: str) -> threading.Event:
        """Cancel a queued or running job. Returns an event set once it has ended (already set for a
        queued job); the caller then reads the outcome with `get`, because a running job may have
        finished on its own meanwhile. Raises JobNotFound, JobConflict or StorageError."""
        if job_id in self._launcher:
            return self._launcher.cancel(job_id)
        job = self.get(job_id)
        if job.status is not Status.IN_QUEUE:
            raise JobConflict(job.id, job.status.value, "cancel", "IN_QUEUE or IN_PROGRESS")
        canceled = unstarted.cancel(job, self._settings.jobs_dir, timestamp(self._now()))
        self._scheduler.remove(job.id)
        self._ended(canceled)
        return _set_event()

    def delete(self, job_id: str) -> threading.Event:
        """Forget a finished job; its directory goes on a helper thread. Returns an event set once it is gone
        (or postponed). Raises JobNotFound, or JobConflict while its Supervisor owns the files."""
        job = self.get(job_id)
        if not job.status.terminal or job_id in self._deliveries:
            state = job.status.value if not job.status.terminal else "delivering its webhook"
            raise JobConflict(job.id, state, "delete", "COMPLETED, FAILED or CANCELED (and not delivering)")
        self._forget(job)
        return self._retention.remove([job])

    def shutdown(self) -> list[threading.Event]:
        """Stop taking jobs and interrupt running ones (they are queued again for the next start).
        Returns their `finished` events for the caller to wait on."""
        self._accepting = False
        return self._launcher.interrupt_all()

    # --- told by Supervisors, timers and itself ---------------------------------------------------

    def pump(self) -> None:
        """Start what may start now (sent to itself after a submit is answered)."""
        self._pump()

    def job_started(self, job: Job) -> None:
        self._table.put(job)

    def job_ended(self, job: Job) -> None:
        """A run is over: the job is terminal, or back IN_QUEUE after a shutdown interrupted it."""
        self._launcher.ended(job.id)
        self._scheduler.ended(job.id)
        self._ended(job)

    def delivery_ended(self, job: Job) -> None:
        self._deliveries.ended(job.id)
        self._ended(job)

    def wake(self) -> None:
        """The alarm rang (a delivery or a job's run_at is due): start what is due."""
        self._alarm.rang()
        self._pump()

    def sweep(self) -> None:
        """The retention timer fired: forget finished jobs past the retention (a batch at most) and
        remove their directories, with those whose removal was postponed."""
        expired = self._retention.expired(self._table, self._deliveries, self._now())
        for job in expired:
            self._forget(job)
        self._retention.swept(expired)

    def dirs_removed(self, postponed: list[Job]) -> None:
        """From the removal thread: these jobs' directories could not be moved away yet."""
        self._retention.postponed(postponed)

    # --- inside ----------------------------------------------------------------------------------

    def _submit(self, request: JobRequest, **extra: Any) -> Job:
        admission.admit(request, self._table, self._accepting, self._settings.max_queued)
        job = transitions.new_job(self._new_id(), request, self._now(), self._settings, **extra)
        admission.store(job, self._settings.jobs_dir)
        self._table.put(job)
        self._enqueue(job)
        self._self.pump.defer()  # after this reply: starting a Supervisor takes a millisecond
        return self._table[job.id]  # it may have failed at once (a dependency had failed)

    def _ended(self, job: Job) -> None:
        self._table.put(job)
        if job.status is Status.IN_QUEUE:
            self._enqueue(job)  # back for a retry (or after a shutdown cut its run short)
        elif job.status.terminal:
            for dependent, reason in self._scheduler.dependency_ended(job, self._now().timestamp()):
                self._fail_queued(self._table[dependent], reason)  # may cascade to their dependents
        self._deliveries.owe(job)
        self._pump()

    def _pump(self) -> None:
        """Start queued jobs while worker slots are free, and due deliveries while delivery slots are."""
        next_run_at = self._scheduler.release_due(self._now().timestamp())
        if not self._accepting:
            return
        while (job_id := self._scheduler.next_to_start()) is not None:
            self._launcher.run(self._table[job_id])
        if next_run_at is not None:
            self._alarm.at(timestamp(datetime.fromtimestamp(next_run_at, UTC)))
        due_now, next_due = self._deliveries.take_due(timestamp(self._now()))
        for job_id in due_now:
            self._launcher.deliver(self._table[job_id])
        if next_due is not None:
            self._alarm.at(next_due)

    def _enqueue(self, job: Job) -> None:
        """Hand an IN_QUEUE job to the scheduler, or fail it if it can never run."""
        status_of = lambda job_id: self._table[job_id].status if job_id in self._table else None  # noqa: E731
        reason = self._scheduler.add(job, self._now().timestamp(), status_of)
        if reason is not None:
            self._fail_queued(job, reason)

    def _fail_queued(self, job: Job, reason: str) -> None:
        """A queued job (no Supervisor: ours to write) ends FAILED without running; may cascade."""
        failed = unstarted.fail(job, reason, self._settings.jobs_dir, timestamp(self._now()))
        self._ended(failed)

    def _forget(self, job: Job) -> None:
        self._table.forget(job)
        self._scheduler.remove(job.id)  # finished jobs have left it already; nothing stale stays behind
        self._idempotency.forget(job)  # its key may make a new job now
        self._deliveries.forget(job.id)


def _set_event() -> threading.Event:
    done = threading.Event()
    done.set()
    return done


DispatcherProxy: TypeAlias = "pykka.ActorProxy[Dispatcher]"
