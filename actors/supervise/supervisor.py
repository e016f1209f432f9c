"""The Supervisor actor: one job's run (child process, output files, cancel) or one webhook delivery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import pykka
from procq.actors import osdeps, transitions, webhook
from procq.actors.job import Job, Status, Usage, timestamp, utc_now
from procq.actors.jobdir import JobDir
from procq.actors.mailbox import Mailbox, report
from procq.actors.settings import Settings
from procq.actors.supervise import limits, threads
from procq.actors.supervise.progress import Progress
from procq.actors.supervise.sampler import Sample
from procq.actors.supervise.spawn import Spawn, resolve_cwd, spawn_child
from procq.actors.transitions import StopReason
from procq.actors.webhook import SendWebhook

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.supervisor")


class Supervisor(pykka.ThreadingActor):
    """Owns one job while it has work: the only writer of jobs/<id>/ during its life.

    The Dispatcher starts it for one of two errands, then it stops itself:
    - `run()`: start the child, follow it to a terminal state (or back to the queue on shutdown);
      `cancel()` and `interrupt()` end the child's whole process tree.
    - `deliver()`: one attempt at the completion webhook; the Dispatcher schedules any retry.
    Threads: the actor thread never blocks. A waiter thread blocks on the child, a stopper thread on
    ending its tree, a webhook thread on the HTTP call, a watch thread samples the run (threads.py);
    each reports back with a deferred message. What a job becomes is decided in transitions.py.
    Before it reports anything to the Dispatcher it has written meta.json, so disk and index agree.
    """

    def __init__(
        self,
        job: Job,
        settings: Settings,
        dispatcher: DispatcherProxy,
        finished: threading.Event,
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
        reason = f"internal error in procq: {exc!r}"
        if not self._job.status.terminal:
            self._finish(Status.FAILED, error=reason)
        elif transitions.owes_delivery(self._job):
            self._set(transitions.delivery_abandoned(self._job, reason))
            self._dispatcher.delivery_ended.defer(self._job)

    # --- running the job -------------------------------------------------------------------------

    def run(self) -> None:
        """Start the child and return at once; the job then reports itself through the Dispatcher."""
        attempt = self._job.attempts + 1
        now = self._stamp()
        try:
            if self._job.cwd is not None:  # checked again: the directory may have been swapped for a symlink
                resolve_cwd(self._settings.cwd_root, self._job.cwd)
            child = self._spawn(self._job, self._dir, attempt)
        except ValueError as exc:
            self._finish(Status.FAILED, attempts=attempt, started_at=now, error=str(exc))
            return
        except OSError as exc:
            reason = f"could not start {self._job.args[0]!r}: {exc.strerror or exc}"
            self._finish(Status.FAILED, attempts=attempt, started_at=now, error=reason)
            return
        pid, created = osdeps.identity(child.pid)
        self._set(transitions.started(self._job, pid, created, attempt, now))
        log.debug("job %s: IN_PROGRESS pid=%d attempt=%d", self._job.id, pid, attempt)
        self._dispatcher.job_started.defer(self._job)
        threading.Thread(target=threads.report_exit, args=(child, self._self), daemon=True).start()
        self._watch(pid, created, attempt)

    def cancel(self) -> None:
        """End the job's process tree and mark it CANCELED. Returns at once; the Dispatcher's event
        is set once every process of the tree is gone. Does nothing if the job already ended."""
        self._end_tree(StopReason.CANCEL)

    def interrupt(self) -> None:
        """Like cancel, for a server shutdown: the job goes back to the queue for the next start."""
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
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None:
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
            self._set(transitions.interrupted_run(self._job, code, self._usage, reason, limit, self._stamp()))
            log.debug("job %s: %s after shutdown", self._job.id, self._job.status.value)
            self._report_end()
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
        self._set(transitions.ended(self._job, status, self._usage, self._now(), **changes))
        job = self._job
        if job.status is Status.IN_QUEUE:
            log.info(
                "job %s: attempt %d failed (%s); retry at %s", job.id, job.attempts, job.runs[-1].error, job.run_at
            )
        else:
            log.debug("job %s: %s exit_code=%s", job.id, status.value, job.exit_code)
        self._report_end()

    def _report_end(self) -> None:
        # Order matters: the Dispatcher hears of the end before anyone woken by the event asks it.
        self._dispatcher.job_ended.defer(self._job)
        self._finished.set()
        report(self.stop)

    # --- limits and usage -----------------------------------------------------------------------------

    def sampled(self, sample: Sample) -> None:
        """From the watch thread: the tree's usage now. Ends the tree past a memory or output limit."""
        self._usage = self._usage.merge(Usage(sample.cpu_user_s, sample.cpu_system_s, sample.rss_bytes))
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
            progress = Progress(job.id, attempt, job.webhook, job.webhook_events, self._send, timeout_s)
        outputs = (self._dir.stdout, self._dir.stderr)
        args = (pid, created, outputs, self._settings.sample_interval_s, self._watching, self._self, progress)
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
        threading.Thread(target=threads.deliver, args=args, daemon=True).start()

    def delivery_finished(self, error: str | None) -> None:
        """From the webhook thread: record the attempt, then hand the job back to the Dispatcher."""
        self._set(transitions.delivery_attempted(self._job, error, self._settings.webhook, self._now()))
        after = self._job.webhook_delivery
        assert after is not None
        log.info("job %s: webhook %s after %d attempt(s) %s", self._job.id, after.state, after.attempts, error or "")
        self._dispatcher.delivery_ended.defer(self._job)
        self.stop()

    # --- helpers ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return timestamp(self._now())

    def _set(self, job: Job) -> None:
        """The job's new state, in memory and in meta.json."""
        self._job = job
        try:
            self._dir.write(job)
        except OSError as exc:
            # The state stays right in memory (and in the index); the next change writes it again.
            log.error("job %s: could not write meta.json: %s", job.id, exc)


SupervisorProxy: TypeAlias = "pykka.ActorProxy[Supervisor]"


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the command was ended by signal {-code}"
    return f"the command exited with code {code}"
