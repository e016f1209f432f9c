"""The Dispatcher actor: the index of every job, the queue, the worker slots and webhook scheduling."""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka
from procq.actors import retention, webhook
from procq.actors.errors import (
    IdempotencyConflict,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    QueueFull,
    ShuttingDown,
    StorageError,
)
from procq.actors.events import Watcher
from procq.actors.index import JobIndex
from procq.actors.job import IdGenerator, Job, JobRequest, Status, parse_timestamp, timestamp, utc_now
from procq.actors.jobdir import JobDir
from procq.actors.mailbox import Mailbox, report
from procq.actors.queues import Scheduler
from procq.actors.runs import completion_delivery, failed_without_running, new_job, rerun_request
from procq.actors.settings import Settings
from procq.actors.supervisor import SendWebhook, Spawn, Supervisor

log = logging.getLogger("procq.dispatcher")

IDEMPOTENCY_TTL = timedelta(hours=24)


class Dispatcher(pykka.ThreadingActor):
    """Decides what runs when, and answers every question about jobs from memory.

    State (its thread only): the index id -> Job, the Scheduler of queued jobs (named queues, priority
    with aging, run_at, dependencies: actors/queues.py), the Supervisors of running jobs with their
    `finished` events, a heap of due webhook deliveries, and the index of Idempotency-Key hashes.
    Accepts `submit`, `submit_once`, `rerun`, `get`, `cancel`, `queues`, `set_queue`, `shutdown` from API
    threads (ask, `.get(timeout=...)`), and
    `job_started`, `job_ended`, `delivery_ended`, `wake` from Supervisors and its timer (defer).
    A Supervisor exists only while its job runs or a delivery is in flight, so 10,000 queued jobs
    cost 10,000 index entries, not threads. The Dispatcher writes a job's meta.json only while the
    job has no Supervisor (creation, cancel while queued).
    Every change of a job passes through `_store`: it updates the JobIndex (sorted ids for paging)
    and tells the watchers (EventHub, Metrics, LifecycleLog), which never block. `delete` and the
    retention timer (`sweep`) forget finished jobs; a helper thread removes their directories.
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
        self._jobs: dict[str, Job] = {job.id: job for job in jobs}
        # queued jobs live in the scheduler (queues, priority, run_at, dependencies); filled in on_start
        self._scheduler = Scheduler(settings.workers, settings.aging_s, settings.queues)
        self._idempotency = {j.idempotency_key_sha256: j.id for j in self._jobs.values() if j.idempotency_key_sha256}
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
        self._watchers = tuple(watchers)  # told of every change by _store; they never block
        self._index = JobIndex(self._jobs.values())
        self._postponed: list[Job] = []  # deleted jobs whose directory could not be removed yet
        self._sweep_timer: threading.Timer | None = None

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()
        for job in sorted(self._jobs.values(), key=lambda job: job.id):
            if job.status is Status.IN_QUEUE:
                self._enqueue(job)
        self._pump()
        self._arm_sweep(1.0)  # soon after start: empty the trash a crash left, expire what aged meanwhile

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()

    # --- asked by the API ------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> Job:
        """Create the job on disk (durably) and queue it. Raises ShuttingDown, QueueFull, InvalidRequest or
        StorageError."""
        return self._submit(request)

    def submit_once(self, request: JobRequest, key_sha256: str, request_sha256: str) -> tuple[Job, bool]:
        """Submit under an Idempotency-Key (its hash): returns (job, True) for a new job, or the job
        made with this key in the last 24 h and False. Raises IdempotencyConflict if that job was
        made from a different body, and whatever `submit` raises."""
        original = self._jobs.get(self._idempotency.get(key_sha256, ""))
        if original is not None and self._now() - parse_timestamp(original.enqueued_at or "") < IDEMPOTENCY_TTL:
            if original.request_sha256 != request_sha256:
                raise IdempotencyConflict(original.id)
            return original, False
        job = self._submit(request, idempotency_key_sha256=key_sha256, request_sha256=request_sha256)
        self._idempotency[key_sha256] = job.id
        return job, True

    def rerun(self, job_id: str, owner: str | None = None) -> Job:
        """Submit a finished job's request again as a new job naming it in `rerun_of`, owned by
        `owner` (whoever asked). Raises JobNotFound, JobConflict (not finished yet) and whatever
        `submit` raises."""
        job = self.get(job_id)
        if not job.status.terminal:
            raise JobConflict(job.id, job.status.value, "rerun", "COMPLETED, FAILED or CANCELED")
        return self._submit(dataclasses.replace(rerun_request(job), owner=owner), rerun_of=job.id)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue's settings and counts (GET /queues)."""
        return self._scheduler.views()

    def set_queue(self, name: str, parallelism: int | None = None, paused: bool | None = None) -> dict[str, Any]:
        """Change (or create) a queue: its parallelism and whether it is paused. Returns its view."""
        view = self._scheduler.configure(name, parallelism, paused)
        log.info("queue %s: parallelism=%s paused=%s", name, view["parallelism"], view["paused"])
        self._pump()  # a resumed or widened queue may start jobs now
        return self._scheduler.configure(name)

    def _submit(self, request: JobRequest, **extra: Any) -> Job:
        if not self._accepting:
            raise ShuttingDown()
        self._check_room()
        unknown = [dependency for dependency in request.after if dependency not in self._jobs]
        if unknown:
            raise InvalidRequest(f"after: there is no job with id {unknown[0]!r}; after lists ids of existing jobs")
        job = new_job(self._new_id(), request, self._now(), self._settings, **extra)
        try:
            self._dir(job).create(job)
        except OSError as exc:
            log.error("job %s: could not be stored: %s", job.id, exc)
            raise StorageError("create the job's directory", exc) from exc
        log.debug("job %s: IN_QUEUE args=%s", job.id, list(job.args))
        self._store(job)
        self._enqueue(job)
        self._self.pump.defer()  # after this reply: starting a Supervisor takes a millisecond
        return self._jobs[job.id]  # it may have failed at once (a dependency had failed)

    def pump(self) -> None:
        """Start what may start now (sent to itself after a submit is answered)."""
        self._pump()

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
            webhook_delivery=completion_delivery(job),
        )
        try:
            self._dir(job).write(canceled)
        except OSError as exc:
            raise StorageError("record the cancel", exc) from exc
        log.debug("job %s: CANCELED while queued", job.id)
        self._scheduler.remove(job.id)
        self._ended(canceled)
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

    # --- finding and removing jobs ----------------------------------------------------------------

    def list_jobs(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None = None,
        search: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of jobs newest first, with ids below `before` (the last id of the previous page),
        and the id to continue from, or None on the last page. New jobs have larger ids, so paging
        while jobs are added neither skips nor repeats one. Returns at once."""
        ids, more = self._index.page(statuses, tag, before, limit, self._jobs, owner, search)
        return [self._jobs[i] for i in ids], (ids[-1] if more and ids else None)

    def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Counts per status (of `owner`'s jobs only, if given) and worker slots in use, from memory
        (GET /stats, /metrics)."""
        return {
            "counts": {status.value: self._index.count(status, owner) for status in Status},
            "workers": {"busy": len(self._running), "total": self._settings.workers},
        }

    def delete(self, job_id: str) -> threading.Event:
        """Forget a finished job and remove its directory on a helper thread. Returns an event set
        once the directory is gone (or its removal postponed). Raises JobNotFound, or JobConflict
        while it is queued, running, or delivering its webhook (its Supervisor owns the files)."""
        job = self.get(job_id)
        if not job.status.terminal or job_id in self._delivering:
            state = job.status.value if not job.status.terminal else "delivering its webhook"
            raise JobConflict(job.id, state, "delete", "COMPLETED, FAILED or CANCELED (and not delivering)")
        self._forget(job)
        done = threading.Event()
        self._remove_dirs([job], done)
        return done

    def sweep(self) -> None:
        """The retention timer fired: remove finished jobs older than the retention, at most a batch
        at a time, and retry removals that were postponed."""
        self._sweep_timer = None
        expired = self._expired(retention.BATCH) if self._settings.retention_s > 0 else []
        for job in expired:
            self._forget(job)
        retry, self._postponed = self._postponed, []
        self._remove_dirs(expired + retry, threading.Event())
        full = len(expired) >= retention.BATCH
        self._arm_sweep(0.1 if full else retention.sweep_interval(self._settings.retention_s))

    def dirs_removed(self, postponed: list[Job]) -> None:
        """From the removal thread: these jobs' directories could not be moved away yet."""
        self._postponed.extend(postponed)

    # --- told by Supervisors and the timer -------------------------------------------------------

    def job_started(self, job: Job) -> None:
        self._store(job)

    def job_ended(self, job: Job) -> None:
        """A run is over: the job is terminal, or back IN_QUEUE after a shutdown interrupted it."""
        self._running.pop(job.id, None)
        self._scheduler.ended(job.id)
        self._ended(job)

    def delivery_ended(self, job: Job) -> None:
        self._delivering.discard(job.id)
        self._ended(job)

    def wake(self) -> None:
        """The timer fired (a delivery or a job's run_at is due): start what is due."""
        self._timer = None
        self._pump()

    # --- inside ----------------------------------------------------------------------------------

    def _check_room(self) -> None:
        limit = self._settings.max_queued
        if limit is not None and self._index.count(Status.IN_QUEUE) >= limit:  # O(1): the index counts
            raise QueueFull(limit)

    def _ended(self, job: Job) -> None:
        self._store(job)
        if job.status is Status.IN_QUEUE:
            self._enqueue(job)  # back for a retry (or after a shutdown cut its run short)
        elif job.status.terminal:
            now_s = self._now().timestamp()
            for dependent, reason in self._scheduler.dependency_ended(job, now_s):
                self._fail_queued(self._jobs[dependent], reason)
        delivery = job.webhook_delivery
        if job.status.terminal and delivery is not None and delivery.state == "pending":
            heapq.heappush(self._deliveries, (delivery.next_attempt_at or "", job.id))
        self._pump()

    def _pump(self) -> None:
        """Start queued jobs while worker slots are free, and due deliveries while delivery slots are."""
        next_run_at = self._scheduler.release_due(self._now().timestamp())
        while self._accepting and len(self._running) < self._settings.workers:
            job_id = self._scheduler.next_to_start()  # the best job of a queue that may start one
            if job_id is None:
                break
            job = self._jobs[job_id]
            finished = threading.Event()
            supervisor = self._supervisor(job, finished)
            self._running[job.id] = (supervisor, finished)
            supervisor.run.defer()
        if self._accepting and next_run_at is not None:
            self._arm_timer(timestamp(datetime.fromtimestamp(next_run_at, UTC)))
        now = timestamp(self._now())
        while self._accepting and self._deliveries and len(self._delivering) < self._settings.webhook_concurrency:
            due, job_id = self._deliveries[0]
            if due > now:
                self._arm_timer(due)
                break
            heapq.heappop(self._deliveries)
            self._delivering.add(job_id)
            self._supervisor(self._jobs[job_id], threading.Event()).deliver.defer()

    def _enqueue(self, job: Job) -> None:
        """Hand an IN_QUEUE job to the scheduler, or fail it if it can never run."""
        status_of = lambda job_id: self._jobs[job_id].status if job_id in self._jobs else None  # noqa: E731
        reason = self._scheduler.add(job, self._now().timestamp(), status_of)
        if reason is not None:
            self._fail_queued(job, reason)

    def _fail_queued(self, job: Job, reason: str) -> None:
        """A queued job (no Supervisor: ours to write) ends FAILED without running; may cascade."""
        failed = failed_without_running(job, reason, timestamp(self._now()))
        try:
            self._dir(job).write(failed)
        except OSError as exc:
            log.error("job %s: could not record its failure: %s", job.id, exc)
        log.info("job %s: FAILED without running: %s", job.id, reason)
        self._ended(failed)

    def _supervisor(self, job: Job, finished: threading.Event) -> Mailbox:
        return Mailbox(
            Supervisor.start(
                job,
                self._settings,
                self._self,
                finished,
                spawn=self._spawn,
                now=self._now,
                send_webhook=self._send_webhook,
            )
        )

    def _arm_timer(self, due: str) -> None:
        if self._timer is not None and self._timer_due <= due:
            return  # it fires first, and the pump it triggers arms the next
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        delay = max(0.0, (parse_timestamp(due) - self._now()).total_seconds())
        self._timer = threading.Timer(delay, report, args=(self._self.wake.defer,))
        self._timer.daemon = True
        self._timer.start()

    def _dir(self, job: Job) -> JobDir:
        return JobDir(self._settings.jobs_dir / job.id)

    def _store(self, job: Job) -> None:
        """Every new job and every change of one passes here: the index, then the watchers."""
        before = self._jobs.get(job.id)
        self._jobs[job.id] = job
        self._index.put(before, job)
        for watcher in self._watchers:
            try:
                watcher.job_changed(before, job)
            except Exception:  # a broken watcher must not stop the Dispatcher
                log.exception("watcher %r failed on job %s", watcher, job.id)

    def _forget(self, job: Job) -> None:
        del self._jobs[job.id]
        self._index.remove(job)
        self._scheduler.remove(job.id)  # finished jobs have left it already; nothing stale stays behind
        if job.idempotency_key_sha256 and self._idempotency.get(job.idempotency_key_sha256) == job.id:
            del self._idempotency[job.idempotency_key_sha256]  # its key may make a new job now
        if any(job_id == job.id for _, job_id in self._deliveries):
            self._deliveries = [entry for entry in self._deliveries if entry[1] != job.id]
            heapq.heapify(self._deliveries)
        for watcher in self._watchers:
            try:
                watcher.job_removed(job)
            except Exception:
                log.exception("watcher %r failed on removed job %s", watcher, job.id)

    def _expired(self, limit: int) -> list[Job]:
        cutoff = timestamp(self._now() - timedelta(seconds=self._settings.retention_s))
        terminal = (Status.COMPLETED, Status.FAILED, Status.CANCELED)
        finished = (self._jobs[i] for status in terminal for i in self._index.ids_with_status(status))
        return retention.expired(finished, cutoff, self._delivering, limit)

    def _remove_dirs(self, jobs: list[Job], done: threading.Event) -> None:
        on_removed = functools.partial(_removed, self._self, jobs, done)
        args = (self._settings.jobs_dir, jobs, on_removed)
        threading.Thread(target=retention.remove_jobs, args=args, daemon=True).start()

    def _arm_sweep(self, delay_s: float) -> None:
        self._sweep_timer = threading.Timer(delay_s, report, args=(self._self.sweep.defer,))
        self._sweep_timer.daemon = True
        self._sweep_timer.start()


def _removed(dispatcher: Any, jobs: list[Job], done: threading.Event, postponed_ids: list[str]) -> None:
    postponed = [job for job in jobs if job.id in postponed_ids]
    if postponed:
        report(lambda: dispatcher.dirs_removed.defer(postponed))
    done.set()
