"""The Dispatcher actor: routes every request about jobs to the helper object that owns the answer."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import pykka

from procq.actors import webhook
from procq.actors.dispatch import unstarted
from procq.actors.dispatch.accepting import Accepting
from procq.actors.dispatch.alarm import Alarm
from procq.actors.dispatch.catalog import Catalog
from procq.actors.dispatch.deliveries import Deliveries
from procq.actors.dispatch.idempotency import Idempotency
from procq.actors.dispatch.index import JobTable
from procq.actors.dispatch.launcher import Launcher
from procq.actors.dispatch.outcomes import CommitOutcomes
from procq.actors.dispatch.queries import Queries
from procq.actors.dispatch.receipts import carry_on, if_failed, when_done
from procq.actors.dispatch.retention import Retention
from procq.actors.dispatch.scheduler import Scheduler
from procq.actors.errors import JobConflict
from procq.actors.events import Watcher
from procq.actors.job import IdGenerator, Job, Status, timestamp, utc_now
from procq.actors.keeper.link import KeeperLink
from procq.actors.settings import Settings
from procq.actors.store.base import Commit, Recorded, Store
from procq.actors.store.sqlite import SqliteStore
from procq.actors.supervise.monitor import Monitor
from procq.actors.supervise.spawn import Spawn
from procq.actors.webhook import SendWebhook
from procq.actors.webhookpool import WebhookPool

log = logging.getLogger("procq.dispatcher")


class Dispatcher(Accepting, Queries, CommitOutcomes, pykka.ThreadingActor):
    """Decides what runs when, and answers every question about jobs from memory.

    State (its thread only), each part a plain helper object: the JobTable (jobs, index, watchers),
    the Scheduler (queues, aging, run_at, dependencies, worker slots), the Launcher (Supervisors of
    running jobs), the Deliveries (webhooks owed), Retention (deleting), Idempotency, the Alarm.
    Asked by API threads (`.get(timeout=...)`); told by Supervisors, timers and itself (defer).
    A Supervisor exists only while its job runs or a delivery is in flight, so 10,000 queued jobs
    cost 10,000 table entries, not threads. The Dispatcher writes a job's meta.json only while the
    job has no Supervisor (creation, cancel while queued, failing a job that cannot run).
    Its messages are grouped by who sends them: accepting.py (new jobs), queries.py (questions),
    outcomes.py (the store's commit outcomes); this file holds the rest and the routing between them.
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
        store: Store | None = None,
        counts: Mapping[Status, int] | None = None,
        keeper: KeeperLink | None = None,
        webhook_pool: WebhookPool | None = None,
    ) -> None:
        super().__init__()
        self._own_store = store is None
        self._store: Store = store if store is not None else SqliteStore(settings.jobs_dir)
        self._keeper = keeper  # None: made (and closed) by this Dispatcher, for tests and embedding
        self._owns_keeper = keeper is None
        # every webhook of every job (completion, start, logs) runs on this one bounded pool
        self._webhook_pool = webhook_pool or WebhookPool(settings.webhook_concurrency)
        self._settings = settings
        self._new_id = new_id or IdGenerator()
        self._now = now
        self._spawn = spawn
        self._send_webhook = send_webhook
        self._table = JobTable(jobs, watchers)
        self._catalog = Catalog(self._table, self._store, counts)
        # filled in on_start
        self._scheduler = Scheduler(settings.workers, settings.aging_s, settings.queues, settings.node)
        self._idempotency = Idempotency(self._table.values())
        self._deliveries = Deliveries(self._table.values(), settings.webhook_concurrency)
        self._accepting = True

    def on_start(self) -> None:
        self._self: DispatcherProxy = self.actor_ref.proxy()
        self._alarm = Alarm(self._self.wake.defer, self._now)
        if self._keeper is None:
            self._keeper = KeeperLink(self._settings.jobs_dir, self._settings.grace_s)
        self._monitor = Monitor(self._settings.sample_interval_s)
        self._launcher = Launcher(
            self._settings,
            self._self,
            self._spawn,
            self._now,
            self._send_webhook,
            self._keeper,
            self._monitor,
            self._webhook_pool,
            self._store,
        )
        self._retention = Retention(self._settings, self._self, self._store, self._now)
        self._held_until = 0.0  # after a run could not be recorded: start nothing before this (monotonic)
        for job in sorted(self._table.values(), key=lambda job: job.id):
            if job.status is Status.IN_QUEUE:
                self._enqueue_or_end(job)
            elif job.status is Status.IN_PROGRESS:  # recovery found its run alive (or ended) in the keeper
                self._scheduler.adopt(job)
                self._launcher.adopt(job)
        self._pump()
        self._retention.start()

    def on_stop(self) -> None:
        self._alarm.cancel()
        self._retention.stop()
        self._monitor.close()
        if self._owns_keeper and self._keeper is not None:
            self._keeper.close(keep_running=False)
        if self._own_store:
            self._store.close()

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        log.critical("dispatcher stopped by %r; the server answers 503 until it is restarted", exc)

    # --- asked by the API ------------------------------------------------------------------------

    def set_queue(self, name: str, parallelism: int | None = None, paused: bool | None = None) -> dict[str, Any]:
        """Change (or create) a queue: its parallelism and whether it is paused. Returns its view."""
        view = self._scheduler.configure(name, parallelism, paused)
        log.info("queue %s: parallelism=%s paused=%s", name, view["parallelism"], view["paused"])
        self._pump()  # a resumed or widened queue may start jobs now
        return self._scheduler.configure(name)

    def cancel(self, job_id: str) -> threading.Event | Recorded:
        """Cancel a queued or running job. For a running one, returns an event set once it has ended
        (its outcome recorded); the caller then reads it with `get`, because it may have finished on
        its own meanwhile. For a queued one, returns the commit of its CANCELED state (StorageError
        if it failed). Raises JobNotFound or JobConflict."""
        if job_id in self._launcher:
            return self._launcher.cancel(job_id)
        job = self.get(job_id)
        if job.status is not Status.IN_QUEUE:
            raise JobConflict(job.id, job.status.value, "cancel", "IN_QUEUE or IN_PROGRESS")
        canceled = unstarted.cancel(job, timestamp(self._now()))
        commit = self._store.update([canceled])
        commit.add_done_callback(functools.partial(if_failed, self._self.cancel_not_recorded, job))
        self._scheduler.remove(job.id)
        self._ended(canceled)
        return Recorded.of(commit)

    def delete(self, job_id: str) -> tuple[Commit, threading.Event]:
        """Forget a finished job once its deletion is committed; its directory then goes on a helper
        thread. Returns the commit (StorageError if it failed) and an event set once the directory is
        gone (or postponed). Raises JobNotFound, or JobConflict while its Supervisor owns the files."""
        job = self.get(job_id)
        if not job.status.terminal or job_id in self._deliveries:
            state = job.status.value if not job.status.terminal else "delivering its webhook"
            raise JobConflict(job.id, state, "delete", "COMPLETED, FAILED or CANCELED (and not delivering)")
        removed = threading.Event()
        commit = self._store.delete([job.id])
        commit.add_done_callback(functools.partial(when_done, self._self.deleted, [job], removed))
        return commit, removed

    def shutdown(self, keep_running: bool = False) -> list[threading.Event]:
        """Stop taking jobs and interrupt running ones (they are queued again for the next start), or
        with `keep_running` leave them to the keeper for the next server. Returns the events to wait on."""
        self._accepting = False
        if keep_running:
            return []
        return self._launcher.interrupt_all()

    # --- told by Supervisors, timers, the store and itself (never waited on: see carry_on) ---------

    @carry_on
    def pump(self) -> None:
        """Start what may start now (sent to itself after a submit is answered)."""
        self._pump()

    @carry_on
    def job_started(self, job: Job) -> None:
        self._table.put(job)

    @carry_on
    def job_ended(self, job: Job) -> None:
        """A run is over and its outcome committed: the job is terminal, or back IN_QUEUE (a retry, or
        a shutdown interrupted it)."""
        self._launcher.ended(job.id)
        self._scheduler.ended(job.id)
        self._ended(job)

    @carry_on
    def delivery_ended(self, job: Job) -> None:
        self._deliveries.ended(job.id)
        self._ended(job)

    @carry_on
    def wake(self) -> None:
        """The alarm rang (a delivery or a job's run_at is due): start what is due."""
        self._alarm.rang()
        self._pump()

    @carry_on
    def sweep(self, found: list[Job], cutoff: str | None) -> None:
        """The retention timer fired and its thread read the finished jobs completed before `cutoff`
        (None: no retention): delete those that owe no webhook (a batch at most), then remove their
        directories, with those whose removal was postponed."""
        # read off this thread: a job changed since (rerun meanwhile) is not the one found, and stays
        found = [job for job in found if _unchanged(self._table.get(job.id), job)]
        expired = self._retention.expired(found, cutoff, self._deliveries)
        if not expired:
            self._retention.swept([])
            return
        commit = self._store.delete([job.id for job in expired])
        commit.add_done_callback(functools.partial(when_done, self._self.swept, expired, None))

    @carry_on
    def dirs_removed(self, postponed: list[Job]) -> None:
        """From the removal thread: these jobs' directories could not be moved away yet."""
        self._retention.postponed(postponed)

    # --- inside ----------------------------------------------------------------------------------

    def _ended(self, job: Job) -> None:
        """Record what a change means for the rest: dependents fail (a chain of any length, without
        recursion), webhooks are owed, free slots are filled."""
        pending = [job]
        while pending:
            job = pending.pop()
            self._table.put(job)
            if job.status is Status.IN_QUEUE:
                failed = self._enqueue(job)  # back for a retry (or after a shutdown cut its run short)
                if failed is not None:
                    pending.append(failed)
            elif job.status.terminal:
                for dependent, reason in self._scheduler.dependency_ended(job, self._now().timestamp()):
                    pending.append(self._fail_queued(self._table[dependent], reason))
            self._deliveries.owe(job)
        self._pump()

    def _pump(self) -> None:
        """Start queued jobs while worker slots are free, and due deliveries while delivery slots are."""
        next_run_at = self._scheduler.release_due(self._now().timestamp())
        if not self._accepting or time.monotonic() < self._held_until:
            return
        while (job_id := self._scheduler.next_to_start()) is not None:
            job = self._table[job_id]
            assignment = self._scheduler.assignment(job_id)
            if assignment is not None:  # shown at once; the Supervisor sets the child's devices from it
                job = dataclasses.replace(job, assigned=assignment.to_dict())
                self._table.put(job)
            self._launcher.run(job)
        if next_run_at is not None:
            self._alarm.at(timestamp(datetime.fromtimestamp(next_run_at, UTC)))
        due_now, next_due = self._deliveries.take_due(timestamp(self._now()))
        for job_id in due_now:
            self._launcher.deliver(self._table[job_id])
        if next_due is not None:
            self._alarm.at(next_due)

    def _enqueue_or_end(self, job: Job) -> None:
        failed = self._enqueue(job)
        if failed is not None:
            self._ended(failed)

    def _enqueue(self, job: Job) -> Job | None:
        """Hand an IN_QUEUE job to the scheduler; returns it FAILED instead if it can never run."""
        reason = self._scheduler.add(job, self._now().timestamp(), self._catalog.status_of)
        return None if reason is None else self._fail_queued(job, reason)

    def _fail_queued(self, job: Job, reason: str) -> Job:
        """A queued job (no Supervisor: ours to record) ends FAILED without running."""
        failed = unstarted.fail(job, reason, timestamp(self._now()))
        self._store.update([failed])  # a failure is logged by the store; the dependency will not come back
        return failed

    def _forget(self, job: Job) -> None:
        self._catalog.forget(job)
        self._scheduler.remove(job.id)  # finished jobs have left it already; nothing stale stays behind
        self._idempotency.forget(job)  # its key may make a new job now
        self._deliveries.forget(job.id)


def _unchanged(held: Job | None, found: Job) -> bool:
    return held is None or (held.status.terminal and held.completed_at == found.completed_at)


DispatcherProxy: TypeAlias = "pykka.ActorProxy[Dispatcher]"
