"""The Supervisor actor: one job's run (child process, output files, cancel) or one webhook delivery."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import pykka
from procq.actors import osdeps, transitions, webhook, webhookpool
from procq.actors.job import Job, Status, Usage, timestamp, utc_now
from procq.actors.jobdir import JobDir
from procq.actors.mailbox import Mailbox, report
from procq.actors.resources import detect
from procq.actors.settings import Settings
from procq.actors.store.base import Store
from procq.actors.supervise import limits, threads
from procq.actors.supervise.progress import Progress
from procq.actors.supervise.recording import Recording
from procq.actors.supervise.sampler import Sample
from procq.actors.supervise.spawn import Spawn, resolve_cwd, spawn_child, with_visible_devices
from procq.actors.transitions import StopReason
from procq.actors.webhook import SendWebhook

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.supervisor")


class Supervisor(Recording, pykka.ThreadingActor):
    """Owns one job while it has work: the only writer of jobs/<id>/ during its life.

    The Dispatcher starts it for one of two errands, then it stops itself:
    - `run()`: start the child, follow it to a terminal state (or back to the queue on shutdown);
      `cancel()` and `interrupt()` end the child's whole process tree.
    - `deliver()`: one attempt at the completion webhook; the Dispatcher schedules any retry.
    Threads: the actor thread never blocks. A waiter thread blocks on the child, a stopper thread on
    ending its tree, a webhook thread on the HTTP call, a watch thread samples the run (threads.py);
    each reports back with a deferred message. What a job becomes is decided in transitions.py.
    Every change goes to the store (which keeps meta.json); the attempt is durable before its
    process starts, and an end is durable before the Dispatcher hears of it (`_record_then`).
    """

    def __init__(
        self,
        job: Job,
        settings: Settings,
        dispatcher: DispatcherProxy,
        finished: threading.Event,
        store: Store,
        spawn: Spawn | None = None,
        now: Callable[[], datetime] = utc_now,
        send_webhook: SendWebhook = webhook.send,
    ) -> None:
        super().__init__()
        self._job = job
        self._settings = settings
        self._dir = JobDir(settings.jobs_dir / job.id)
        self._dispatcher = dispatcher
        self._finished = finished
        self._store = store
        self._record_failures = 0  # in a row: how long to wait before trying a commit again
        self._spawned = False
        self._spawn = spawn or spawn_child
        self._now = now
        self._send = send_webhook
        self._stop_reason: StopReason | None = None  # set once the tree is being ended
        self._exit_code: int | None = None
        self._tree_stopped = False
        # limits: the watch thread and timeout timer of the current run, what they measured
        self._watching = threading.Event()  # set to stop the watch thread
        self._timeout: threading.Timer | None = None
        self._usage = Usage()
        self._limit_error: str | None = None

    def on_start(self) -> None:
        self._self: Mailbox[Supervisor] = Mailbox(self.actor_ref)  # for helper threads; cheaper than a proxy

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # A bug must not leave a job IN_PROGRESS, or a delivery slot taken, forever: record it and
        # let the Dispatcher move on.
        log.error("job %s: supervisor failed: %r", self._job.id, exc)
        # The actor is stopping: record without waiting for the commit, which it could not hear of.
        reason = f"internal error in procq: {exc!r}"
        if not self._job.status.terminal:
            self._stop_watch()
            self._set(transitions.ended(self._job, Status.FAILED, self._usage, self._now(), error=reason))
            self._report_end()
        elif transitions.owes_delivery(self._job):
            self._set(transitions.delivery_abandoned(self._job, reason))
            self._dispatcher.delivery_ended.defer(self._job)

    # --- running the job -------------------------------------------------------------------------

    def run(self) -> None:
        """Record the attempt, and start the child once that record is durable (`_start_child`), so no
        crash can leave a process that no record counts. Returns at once."""
        queued = self._job
        attempt = transitions.attempt_begun(queued, queued.attempts + 1, self._stamp())
        self._record_then(attempt, self._start_child, if_lost=lambda: self._not_started(queued))

    def _start_child(self) -> None:
        attempt, now = self._job.attempts, self._job.started_at or self._stamp()
        if self._stop_reason is not None:  # canceled or interrupted while the attempt was being recorded
            self._not_run(self._stop_reason)
            return
        try:
            if self._job.cwd is not None:  # checked again: the directory may have been swapped for a symlink
                resolve_cwd(self._settings.cwd_root, self._job.cwd)
            child = self._spawn(with_visible_devices(self._job, self._settings.node), self._dir, attempt)
        except ValueError as exc:
            self._finish(Status.FAILED, error=str(exc))
            return
        except OSError as exc:
            self._finish(Status.FAILED, error=f"could not start {self._job.args[0]!r}: {exc.strerror or exc}")
            return
        self._spawned = True
        pid, created = osdeps.identity(child.pid)
        self._set(transitions.started(self._job, pid, created, attempt, now))
        log.debug("job %s: IN_PROGRESS pid=%d attempt=%d", self._job.id, pid, attempt)
        self._dispatcher.job_started.defer(self._job)
        threading.Thread(target=threads.report_exit, args=(child, self._self), daemon=True).start()
        self._watch(pid, created, attempt)

    def _not_run(self, reason: StopReason) -> None:
        """A cancel or a shutdown came before the child was started: the attempt is taken back."""
        unstarted = dataclasses.replace(self._job, attempts=self._job.attempts - 1, started_at=None)
        if reason is StopReason.CANCEL:
            self._job = unstarted
            self._finish(Status.CANCELED, error="canceled by request before it started")
            return
        self._dispatcher.run_over.defer(self._job.id)
        requeued = dataclasses.replace(unstarted, status=Status.IN_QUEUE)
        self._record_then(requeued, self._report_end, if_lost=self._retry_later)

    def _not_started(self, queued: Job) -> None:
        """The attempt could not be recorded (the store failed, or the job is gone): nothing ran."""
        self._job = queued
        self._dispatcher.run_not_started.defer(queued)
        self._finished.set()
        report(self.stop)

    def cancel(self) -> None:
        """Record that a cancel was asked for, then end the job's process tree and mark it CANCELED.
        Returns at once; the Dispatcher's event is set once every process of the tree is gone and
        CANCELED is committed. Does nothing if the job already ended."""
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None:
            return
        if not self._spawned:  # its attempt is still being recorded: it will not start
            self._stop_reason = StopReason.CANCEL
            return
        requested = transitions.cancel_requested(self._job, self._stamp())
        self._record_then(requested, lambda: self._end_tree(StopReason.CANCEL), if_lost=None)

    def interrupt(self) -> None:
        """Like cancel, for a server shutdown: the job goes back to the queue for the next start."""
        if not self._spawned and self._stop_reason is None and self._job.status is Status.IN_PROGRESS:
            self._stop_reason = StopReason.INTERRUPT  # its attempt is still being recorded
            return
        self._end_tree(StopReason.INTERRUPT)

    def process_exited(self, exit_code: int, usage: Usage | None = None) -> None:
        """From the waiter thread: the child has exited (its own descendants may live on)."""
        self._exit_code = exit_code
        if usage is not None:
            self._usage = self._usage.merge(usage)
        if self._stop_reason is None or self._tree_stopped:
            self._conclude()

    def tree_stopped(self, survivors: list[int]) -> None:
        """From the stopper thread: the tree is gone, but for `survivors` (logged by osdeps)."""
        self._tree_stopped = True
        if self._exit_code is not None:
            self._conclude()

    def _end_tree(self, reason: StopReason) -> None:
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None or self._job.pid is None:
            return
        self._stop_reason = reason
        job = self._job
        args = (job.pid, job.pid_started_at, self._settings.grace_s, self._self)
        threading.Thread(target=threads.stop_tree, args=args, daemon=True).start()

    def _conclude(self) -> None:
        code = self._exit_code
        self._stop_watch()
        if self._stop_reason is StopReason.INTERRUPT:
            reason, limit = "interrupted by a server shutdown", self._settings.restart_limit
            after = transitions.interrupted_run(self._job, code, self._usage, reason, limit, self._stamp())
            log.debug("job %s: %s after shutdown", self._job.id, after.status.value)
            self._dispatcher.run_over.defer(after.id)
            self._record_then(after, self._report_end, if_lost=self._retry_later)
        elif self._stop_reason is StopReason.CANCEL:
            self._finish(Status.CANCELED, exit_code=code, error="canceled by request")
        elif self._stop_reason is StopReason.LIMIT:
            if self._job.max_output_bytes is not None:  # files are kept, cut to the limit
                limits.truncate_outputs(self._dir.stdout, self._dir.stderr, self._job.max_output_bytes)
            self._finish(Status.FAILED, exit_code=code, error=self._limit_error)
        elif code == 0:
            self._finish(Status.COMPLETED, exit_code=code)
        else:
            self._finish(Status.FAILED, exit_code=code, error=_exit_reason(code))

    def _finish(self, status: Status, **changes: Any) -> None:
        self._stop_watch()
        job = transitions.ended(self._job, status, self._usage, self._now(), **changes)
        if job.status is Status.IN_QUEUE:
            log.info(
                "job %s: attempt %d failed (%s); retry at %s", job.id, job.attempts, job.runs[-1].error, job.run_at
            )
        else:
            log.debug("job %s: %s exit_code=%s", job.id, status.value, job.exit_code)
        # The slot is free once the process is gone: the next job's attempt joins this end's commit.
        self._dispatcher.run_over.defer(job.id)
        self._record_then(job, self._report_end, if_lost=self._retry_later, sync=self._outputs())

    def _report_end(self) -> None:
        # Order matters: the Dispatcher hears of the end before anyone woken by the event asks it.
        self._dispatcher.job_ended.defer(self._job)
        self._finished.set()
        report(self.stop)

    # --- limits and usage -----------------------------------------------------------------------------

    def sampled(self, sample: Sample) -> None:
        """From the watch thread: the tree's usage now. Ends the tree past a memory or output limit."""
        usage = Usage(sample.cpu_user_s, sample.cpu_system_s, sample.rss_bytes, sample.gpu_memory_bytes)
        self._usage = self._usage.merge(usage)
        error = limits.exceeded(self._job, sample)
        if error is not None:
            self.limit_reached(error)

    def limit_reached(self, error: str) -> None:
        """End the tree because a limit was passed; the job ends FAILED with `error` (or is retried)."""
        if self._job.status is Status.IN_PROGRESS and self._stop_reason is None:
            log.info("job %s: %s", self._job.id, error)
            self._limit_error = error
            self._end_tree(StopReason.LIMIT)

    def _watch(self, pid: int, created: float, attempt: int) -> None:
        """Start this run's watch thread (one per run) and its timeout timer."""
        job = self._job
        progress = None
        if job.webhook and {"start", "logs"} & set(job.webhook_events):
            timeout_s = self._settings.webhook.timeout_s
            pool = webhookpool.shared(self._settings.webhook_concurrency)
            progress = Progress(job.id, attempt, job.webhook, job.webhook_events, self._send, timeout_s, pool)
        outputs = (self._dir.stdout, self._dir.stderr)
        node = self._settings.node
        gpu_memory = detect.gpu_memory_by_pid if node.manages_gpus and node.vendor == "nvidia" else None
        args = (
            pid,
            created,
            outputs,
            self._settings.sample_interval_s,
            self._watching,
            self._self,
            progress,
            gpu_memory,
        )
        threading.Thread(target=threads.watch, args=args, daemon=True, name=f"watch-{job.id}").start()
        if job.timeout_seconds is not None:
            args = (self._self, limits.timed_out(job))
            self._timeout = threading.Timer(job.timeout_seconds, threads.limit_reached, args=args)
            self._timeout.daemon = True
            self._timeout.start()

    def _stop_watch(self) -> None:
        self._watching.set()
        if self._timeout is not None:
            self._timeout.cancel()

    # --- delivering the webhook ------------------------------------------------------------------

    def deliver(self) -> None:
        """Make one attempt at the completion webhook, off the actor thread; returns at once."""
        job = self._job
        args = (self._send, job.webhook, webhook.payload(job), self._settings.webhook.timeout_s, self._self)
        webhookpool.shared(self._settings.webhook_concurrency).run(threads.deliver, *args)

    def delivery_finished(self, error: str | None) -> None:
        """From the webhook thread: record the attempt, then hand the job back to the Dispatcher (even
        if the record failed: the attempt is then made again after a restart, never lost)."""
        job = transitions.delivery_attempted(self._job, error, self._settings.webhook, self._now())
        after = job.webhook_delivery
        assert after is not None
        log.info("job %s: webhook %s after %d attempt(s) %s", job.id, after.state, after.attempts, error or "")
        self._record_then(job, self._delivery_recorded, if_lost=self._delivery_recorded)

    def _delivery_recorded(self) -> None:
        self._dispatcher.delivery_ended.defer(self._job)
        self.stop()

    # --- helpers ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return timestamp(self._now())

    def _outputs(self) -> tuple[str, ...]:
        return (str(self._dir.stdout), str(self._dir.stderr)) if self._spawned else ()


SupervisorProxy: TypeAlias = "pykka.ActorProxy[Supervisor]"


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the command was ended by signal {-code}"
    return f"the command exited with code {code}"
