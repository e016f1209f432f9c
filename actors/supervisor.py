"""The Supervisor actor: one job's run (child process, output files, cancel) or one webhook delivery."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka
from procq.actors import osdeps, sampler, webhook
from procq.actors.job import Delivery, Job, Status, interrupted, timestamp, utc_now
from procq.actors.jobdir import JobDir
from procq.actors.mailbox import Mailbox, report
from procq.actors.runs import (
    Usage,
    completion_delivery,
    may_retry,
    requeued_for_retry,
    resolve_cwd,
    resources_of,
    run_record,
)
from procq.actors.settings import Settings

if TYPE_CHECKING:
    from datetime import datetime

log = logging.getLogger("procq.supervisor")

Spawn = Callable[[Job, JobDir, int], "subprocess.Popen[bytes]"]
SendWebhook = Callable[[str, bytes, float], "str | None"]


class Supervisor(pykka.ThreadingActor):
    """Owns one job while it has work: the only writer of jobs/<id>/ during its life.

    The Dispatcher starts it for one of two errands, then it stops itself:
    - `run()`: start the child, follow it to a terminal state (or back to the queue on shutdown);
      `cancel()` and `interrupt()` end the child's whole process tree.
    - `deliver()`: one attempt at the completion webhook; the Dispatcher schedules any retry.
    Threads: the actor thread never blocks. A waiter thread blocks on the child, a stopper thread on
    ending its tree, a webhook thread on the HTTP call; each reports back with a deferred message.
    Before it reports anything to the Dispatcher it has written meta.json, so disk and index agree.
    """

    def __init__(
        self,
        job: Job,
        settings: Settings,
        dispatcher: Any,  # DispatcherProxy
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
        self._stop_reason: str | None = None  # "cancel" or "interrupt" once the tree is being ended
        self._exit_code: int | None = None
        self._tree_stopped = False
        # limits: the watch thread and timeout timer of the current run, what they measured
        self._watching = threading.Event()  # set to stop the watch thread
        self._timeout: threading.Timer | None = None
        self._usage = Usage()
        self._limit_error: str | None = None

    def on_start(self) -> None:
        self._self = Mailbox(self.actor_ref)  # for helper threads; cheaper than a proxy

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # A bug must not leave a job IN_PROGRESS, or a delivery slot taken, forever: record it and
        # let the Dispatcher move on.
        log.error("job %s: supervisor failed: %r", self._job.id, exc)
        reason = f"internal error in procq: {exc!r}"
        if not self._job.status.terminal:
            self._finish(Status.FAILED, error=reason)
        elif self._job.webhook_delivery is not None and self._job.webhook_delivery.state == "pending":
            failed = dataclasses.replace(self._job.webhook_delivery, state="failed", last_error=reason)
            self._update(webhook_delivery=failed)
            self._dispatcher.delivery_ended.defer(self._job)

    # --- running the job -------------------------------------------------------------------------

    def run(self) -> None:
        """Start the child and return at once; the job then reports itself through the Dispatcher."""
        attempt = self._job.attempts + 1
        now = timestamp(self._now())
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
        self._update(status=Status.IN_PROGRESS, pid=pid, pid_started_at=created, attempts=attempt, started_at=now)
        log.debug("job %s: IN_PROGRESS pid=%d attempt=%d", self._job.id, pid, attempt)
        self._dispatcher.job_started.defer(self._job)
        threading.Thread(target=_report_exit, args=(child, self._self), daemon=True).start()
        self._watch(pid, created, attempt)

    def cancel(self) -> None:
        """End the job's process tree and mark it CANCELED. Returns at once; the Dispatcher's event
        is set once every process of the tree is gone. Does nothing if the job already ended."""
        self._end_tree("cancel")

    def interrupt(self) -> None:
        """Like cancel, for a server shutdown: the job goes back to the queue for the next start."""
        self._end_tree("interrupt")

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

    def _end_tree(self, reason: str) -> None:
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None:
            return
        self._stop_reason = reason
        job = self._job
        args = (job.pid, job.pid_started_at, self._settings.grace_s, self._self)
        threading.Thread(target=_stop_tree, args=args, daemon=True).start()

    def _conclude(self) -> None:
        code = self._exit_code
        self._stop_watch()
        if self._stop_reason == "interrupt":
            reason = "interrupted by a server shutdown"
            cut = self._with_run(dataclasses.replace(self._job, exit_code=code, error=reason), self._stamp())
            self._job = dataclasses.replace(self._job, runs=cut.runs, resources=cut.resources)
            job = interrupted(self._job, reason, self._settings.restart_limit, self._stamp())
            self._job = dataclasses.replace(job, exit_code=code) if job.status is Status.FAILED else job
            self._dir_write()
            log.debug("job %s: %s after shutdown", job.id, job.status.value)
            self._report_end()
        elif self._stop_reason == "cancel":
            self._finish(Status.CANCELED, exit_code=code, error="canceled by request")
        elif self._stop_reason == "limit":
            if self._job.max_output_bytes is not None:  # files are kept, cut to the limit
                sampler.truncate_outputs(self._dir.stdout, self._dir.stderr, self._job.max_output_bytes)
            self._finish(Status.FAILED, exit_code=code, error=self._limit_error)
        elif code == 0:
            self._finish(Status.COMPLETED, exit_code=code)
        else:
            self._finish(Status.FAILED, exit_code=code, error=_exit_reason(code))

    def _finish(self, status: Status, **changes: Any) -> None:
        self._stop_watch()
        now = self._stamp()
        ended = self._with_run(dataclasses.replace(self._job, status=status, **changes), now)
        if may_retry(ended):
            self._job = requeued_for_retry(ended, self._now())
            self._dir_write()
            log.info(
                "job %s: attempt %d failed (%s); retry at %s", ended.id, ended.attempts, ended.error, self._job.run_at
            )
            self._report_end()
            return
        self._job = ended
        self._update(completed_at=now, webhook_delivery=completion_delivery(ended))
        log.debug("job %s: %s exit_code=%s", self._job.id, status.value, self._job.exit_code)
        self._report_end()

    def _report_end(self) -> None:
        # Order matters: the Dispatcher hears of the end before anyone woken by the event asks it.
        self._dispatcher.job_ended.defer(self._job)
        self._finished.set()
        report(self.stop)

    # --- limits and usage -----------------------------------------------------------------------------

    def sampled(self, sample: sampler.Sample) -> None:
        """From the watch thread: the tree's usage now. Ends the tree past a memory or output limit."""
        usage = Usage(sample.cpu_user_s, sample.cpu_system_s, sample.rss_bytes)
        self._usage = self._usage.merge(usage)
        job = self._job
        if job.max_memory_bytes is not None and sample.rss_bytes > job.max_memory_bytes:
            self.limit_reached(
                f"memory limit exceeded: the process tree used {sample.rss_bytes} bytes of resident memory "
                f"(max_memory_bytes {job.max_memory_bytes}); it was ended"
            )
        elif job.max_output_bytes is not None and sample.output_bytes > job.max_output_bytes:
            self.limit_reached(
                f"output limit exceeded: stdout and stderr reached {sample.output_bytes} bytes "
                f"(max_output_bytes {job.max_output_bytes}); the tree was ended and the files cut to the limit"
            )

    def limit_reached(self, error: str) -> None:
        """End the tree because a limit was passed; the job ends FAILED with `error` (or is retried)."""
        if self._job.status is Status.IN_PROGRESS and self._stop_reason is None:
            log.info("job %s: %s", self._job.id, error)
            self._limit_error = error
            self._end_tree("limit")

    def _watch(self, pid: int, created: float, attempt: int) -> None:
        """Start this run's watch thread (one per run) and its timeout timer."""
        job = self._job
        progress = None
        if job.webhook and {"start", "logs"} & set(job.webhook_events):
            timeout_s = self._settings.webhook.timeout_s
            progress = sampler.Progress(job.id, attempt, job.webhook, job.webhook_events, self._send, timeout_s)
        outputs = (self._dir.stdout, self._dir.stderr)
        args = (pid, created, outputs, self._settings.sample_interval_s, self._watching, self._self, progress)
        threading.Thread(target=sampler.watch, args=args, daemon=True, name=f"watch-{job.id}").start()
        if job.timeout_seconds is not None:
            error = (
                f"timed out: still running after timeout_seconds {job.timeout_seconds:g}; the process tree was ended"
            )
            self._timeout = threading.Timer(job.timeout_seconds, _limit_reached, args=(self._self, error))
            self._timeout.daemon = True
            self._timeout.start()

    def _stop_watch(self) -> None:
        self._watching.set()
        if self._timeout is not None:
            self._timeout.cancel()

    def _with_run(self, job: Job, completed_at: str) -> Job:
        """`job` with the record of the attempt that just ended (none if it never started)."""
        if job.attempts == 0 or any(run.attempt == job.attempts for run in job.runs):
            return job
        run = run_record(job, self._usage, completed_at)
        return dataclasses.replace(job, runs=(*job.runs, run), resources=resources_of(run))

    # --- delivering the webhook ------------------------------------------------------------------

    def deliver(self) -> None:
        """Make one attempt at the completion webhook, off the actor thread; returns at once."""
        job = self._job
        args = (self._send, job.webhook, webhook.payload(job), self._settings.webhook.timeout_s, self._self)
        threading.Thread(target=_deliver, args=args, daemon=True).start()

    def delivery_finished(self, error: str | None) -> None:
        """From the webhook thread: record the attempt, then hand the job back to the Dispatcher."""
        policy = self._settings.webhook
        before = self._job.webhook_delivery or Delivery()
        attempts = before.attempts + 1
        if error is None:
            after = Delivery("delivered", attempts, before.last_error, None, self._stamp())
        elif attempts >= policy.max_attempts:
            after = Delivery("failed", attempts, error)
        else:
            retry_at = self._now() + timedelta(seconds=policy.delay_after(attempts))
            after = Delivery("pending", attempts, error, timestamp(retry_at))
        log.info("job %s: webhook %s after %d attempt(s) %s", self._job.id, after.state, attempts, error or "")
        self._update(webhook_delivery=after)
        self._dispatcher.delivery_ended.defer(self._job)
        self.stop()

    # --- helpers ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return timestamp(self._now())

    def _update(self, **changes: Any) -> None:
        self._job = dataclasses.replace(self._job, **changes)
        self._dir_write()

    def _dir_write(self) -> None:
        try:
            self._dir.write(self._job)
        except OSError as exc:
            # The state stays right in memory (and in the index); the next change writes it again.
            log.error("job %s: could not write meta.json: %s", self._job.id, exc)


def spawn_child(job: Job, jobdir: JobDir, attempt: int) -> subprocess.Popen[bytes]:
    """Start the job's command without a shell, in its own directory and process group, its output
    going straight into the job's files (no Python loop copies it)."""
    stdout, stderr = jobdir.open_outputs(attempt)
    with stdout, stderr:  # the child holds its own copies; ours close once it is started
        return subprocess.Popen(
            list(job.args),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=job.cwd or jobdir.path,
            env=child_environment({**os.environ, **job.env}),
            **osdeps.spawn_kwargs(),
        )


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment without its own settings and secrets (every PROCQ_* variable)."""
    return {name: value for name, value in environ.items() if not name.upper().startswith("PROCQ_")}


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the command was ended by signal {-code}"
    return f"the command exited with code {code}"


def _report_exit(child: subprocess.Popen[bytes], supervisor: Any) -> None:
    usage = None
    try:
        code, measured = osdeps.wait_child(child)  # waiter thread: it blocks so the actor does not
        usage = Usage(*measured) if measured else None
    except Exception:  # usage is a nicety: the exit code must reach the Supervisor whatever happens
        log.exception("job process %d: could not read its resource usage", child.pid)
        code = child.wait()
    report(lambda: supervisor.process_exited.defer(code, usage))


def _limit_reached(supervisor: Any, error: str) -> None:
    report(lambda: supervisor.limit_reached.defer(error))


def _stop_tree(pid: int, created: float, grace_s: float, supervisor: Any) -> None:
    try:
        survivors = osdeps.stop_tree(pid, created, grace_s)
    except Exception:  # a thread that dies silently would leave the cancel waiting forever
        log.exception("ending the process tree of pid %d failed", pid)
        survivors = [pid]
    report(lambda: supervisor.tree_stopped.defer(survivors))


def _deliver(send: SendWebhook, url: str, body: bytes, timeout_s: float, supervisor: Any) -> None:
    try:
        error = send(url, body, timeout_s)
    except Exception as exc:  # counted as a failed attempt, so the delivery is retried, then given up
        log.exception("webhook delivery to %s failed unexpectedly", url)
        error = f"internal error in procq: {exc!r}"
    report(lambda: supervisor.delivery_finished.defer(error))
