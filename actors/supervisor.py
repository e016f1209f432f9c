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

from actors import osdeps, webhook
from actors.job import Delivery, Job, Status, interrupted, timestamp, utc_now
from actors.jobdir import JobDir
from actors.settings import Settings

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

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()

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
            child = self._spawn(self._job, self._dir, attempt)
        except OSError as exc:
            reason = f"could not start {self._job.args[0]!r}: {exc.strerror or exc}"
            self._finish(Status.FAILED, attempts=attempt, started_at=now, error=reason)
            return
        pid, created = osdeps.identity(child.pid)
        self._update(status=Status.IN_PROGRESS, pid=pid, pid_started_at=created, attempts=attempt, started_at=now)
        log.debug("job %s: IN_PROGRESS pid=%d attempt=%d", self._job.id, pid, attempt)
        self._dispatcher.job_started.defer(self._job)
        threading.Thread(target=_report_exit, args=(child, self._self), daemon=True).start()

    def cancel(self) -> None:
        """End the job's process tree and mark it CANCELED. Returns at once; the Dispatcher's event
        is set once every process of the tree is gone. Does nothing if the job already ended."""
        self._end_tree("cancel")

    def interrupt(self) -> None:
        """Like cancel, for a server shutdown: the job goes back to the queue for the next start."""
        self._end_tree("interrupt")

    def process_exited(self, exit_code: int) -> None:
        """From the waiter thread: the child has exited (its own descendants may live on)."""
        self._exit_code = exit_code
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
        if self._stop_reason == "interrupt":
            job = interrupted(
                self._job, "interrupted by a server shutdown", self._settings.restart_limit, self._stamp()
            )
            self._job = dataclasses.replace(job, exit_code=code)
            self._dir_write()
            log.debug("job %s: %s after shutdown", job.id, job.status.value)
            self._report_end()
        elif self._stop_reason == "cancel":
            self._finish(Status.CANCELED, exit_code=code, error="canceled by request")
        elif code == 0:
            self._finish(Status.COMPLETED, exit_code=code)
        else:
            self._finish(Status.FAILED, exit_code=code, error=_exit_reason(code))

    def _finish(self, status: Status, **changes: Any) -> None:
        delivery = Delivery() if self._job.webhook else None
        self._update(status=status, completed_at=self._stamp(), webhook_delivery=delivery, **changes)
        log.debug("job %s: %s exit_code=%s", self._job.id, status.value, self._job.exit_code)
        self._report_end()

    def _report_end(self) -> None:
        # Order matters: the Dispatcher hears of the end before anyone woken by the event asks it.
        self._dispatcher.job_ended.defer(self._job)
        self._finished.set()
        _tell(self.stop)

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
            cwd=jobdir.path,
            env=child_environment(os.environ),
            **osdeps.spawn_kwargs(),
        )


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment without its own settings and secrets (every PROCQ_* variable)."""
    return {name: value for name, value in environ.items() if not name.upper().startswith("PROCQ_")}


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the command was ended by signal {-code}"
    return f"the command exited with code {code}"


def _tell(deliver: Callable[[], Any]) -> None:
    try:
        deliver()
    except pykka.ActorDeadError:
        pass  # the Supervisor already finished; nothing is waiting for this report


def _report_exit(child: subprocess.Popen[bytes], supervisor: Any) -> None:
    code = child.wait()  # waiter thread: it blocks so the actor does not
    _tell(lambda: supervisor.process_exited.defer(code))


def _stop_tree(pid: int, created: float, grace_s: float, supervisor: Any) -> None:
    try:
        survivors = osdeps.stop_tree(pid, created, grace_s)
    except Exception:  # a thread that dies silently would leave the cancel waiting forever
        log.exception("ending the process tree of pid %d failed", pid)
        survivors = [pid]
    _tell(lambda: supervisor.tree_stopped.defer(survivors))


def _deliver(send: SendWebhook, url: str, body: bytes, timeout_s: float, supervisor: Any) -> None:
    try:
        error = send(url, body, timeout_s)
    except Exception as exc:  # counted as a failed attempt, so the delivery is retried, then given up
        log.exception("webhook delivery to %s failed unexpectedly", url)
        error = f"internal error in procq: {exc!r}"
    _tell(lambda: supervisor.delivery_finished.defer(error))
