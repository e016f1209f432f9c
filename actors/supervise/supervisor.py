"""The Supervisor actor: one job's run (through the keeper: start, follow, cancel) or one webhook delivery."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import pykka

from procq.actors import transitions, webhook, webhookpool
from procq.actors.job import Job, Status, Usage, parse_timestamp, timestamp, utc_now
from procq.actors.jobdir import JobDir
from procq.actors.keeper import protocol
from procq.actors.keeper.client import KeeperError, KeeperLost
from procq.actors.keeper.link import End, KeeperLink
from procq.actors.mailbox import Mailbox, report
from procq.actors.pooled import PooledActor
from procq.actors.settings import Settings
from procq.actors.store.base import Store
from procq.actors.supervise import exits, limits
from procq.actors.supervise.delivering import Delivering
from procq.actors.supervise.faults import crash_point
from procq.actors.supervise.monitor import Monitor
from procq.actors.supervise.recording import Recording
from procq.actors.supervise.spawn import Spawn, resolve_cwd, through_keeper, with_visible_devices
from procq.actors.supervise.watching import Watching
from procq.actors.transitions import StopReason
from procq.actors.webhook import SendWebhook

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.supervisor")

_FAILED_END_WAIT_S = 10.0  # beyond the grace: how long a failed Supervisor waits for its tree to end
_UNSTARTED_LIMIT = 3  # keepers lost in a row before the spawn intent: then the job FAILS (a keeper that keeps dying)


class Supervisor(Recording, Watching, Delivering, PooledActor):
    """Owns one job while it has work: the only writer of jobs/<id>/ during its life.

    The Dispatcher starts it for one of three errands, then it stops itself:
    - `run()`: record the attempt, then ask the keeper to start it, and follow it to a terminal
      state (or back to the queue on shutdown); `cancel()` and `interrupt()` ask the keeper to end
      the run's whole process tree.
    - `adopt()`: follow a run a previous server started, found still running (or ended) at start.
    - `deliver()`: one attempt at the completion webhook; the Dispatcher schedules any retry.
    It has no thread of its own: its messages run on the Supervisors' shared pool (actors/pooled.py),
    so a server's threads do not grow with its running jobs. No handler blocks on the run: its end
    arrives from the KeeperLink's one reader, its timeout and samples from the server's one Monitor;
    a webhook thread blocks on the HTTP call. The only waits on a pool thread are the keeper's
    spawn and stop round trips (one control connection serializes them anyway; bounded by its reply
    timeout), and a failed Supervisor waits for its run's end on a helper thread (`on_failure`).
    What a job becomes is decided in transitions.py. Every change goes to the store (which keeps
    meta.json); the attempt is durable before the keeper is asked to start it, and an end is durable
    before the Dispatcher hears of it (`_record_then`, recording.py). The Monitor's side (timeout,
    limits, progress) is in watching.py, the webhook errand in delivering.py.
    """

    def __init__(
        self,
        job: Job,
        settings: Settings,
        dispatcher: DispatcherProxy,
        finished: threading.Event,
        store: Store,
        keeper: KeeperLink | None = None,
        monitor: Monitor | None = None,
        spawn: Spawn | None = None,
        now: Callable[[], datetime] = utc_now,
        send_webhook: SendWebhook = webhook.send,
        webhook_pool: webhookpool.WebhookPool | None = None,
    ) -> None:
        super().__init__()
        # the Dispatcher's pool, shared by every job; a Supervisor started on its own gets one of its own
        self._own_pool = webhook_pool is None
        self._pool = webhook_pool or webhookpool.WebhookPool(settings.webhook_concurrency)
        self._job = job
        self._settings = settings
        self._dir = JobDir(settings.jobs_dir / job.id)
        self._dispatcher = dispatcher
        self._finished = finished
        self._store = store
        self._record_failures = 0  # in a row: how long to wait before trying a commit again
        self._keeper = keeper
        self._monitor = monitor
        self._spawn = spawn or (through_keeper(keeper, settings.run_as) if keeper is not None else None)
        self._now = now
        self._send = send_webhook
        self._run: str | None = None  # the run marker once the keeper was asked to start it
        self._stop_reason: StopReason | None = None  # set once the tree is being ended
        self._usage = Usage()
        self._limit_error: str | None = None
        self._unstarted = 0  # keepers lost before this attempt's spawn intent: each time it starts again

    def on_stop(self) -> None:
        if self._own_pool:
            self._pool.close()  # its queued attempts still run; then its threads end

    def on_start(self) -> None:
        self._self: Mailbox[Supervisor] = Mailbox(self.actor_ref)  # for helper threads; cheaper than a proxy

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # A bug must not leave a job IN_PROGRESS, its process running, or a slot taken, forever:
        # end the run's tree through the keeper first (a retry must never overlap it), then record.
        log.error("job %s: supervisor failed: %r", self._job.id, exc)
        reason = f"internal error in procq: {exc!r}"
        if not self._job.status.terminal:
            if self._run is None:
                self._record_failure(reason, None)
                return
            # Waiting for the tree (up to the grace and more) must not hold a pool thread. The actor
            # has stopped: it handles no more messages, so this thread is the only one left using it.
            args = (reason,)
            threading.Thread(target=self._fail_after_end, args=args, daemon=True, name="failed-supervisor").start()
        elif transitions.owes_delivery(self._job):
            self._set(transitions.delivery_abandoned(self._job, reason))
            self._dispatcher.delivery_ended.defer(self._job)

    def _fail_after_end(self, reason: str) -> None:
        self._record_failure(reason, self._end_run_now(reason))

    def _record_failure(self, reason: str, end: End | None) -> None:
        changes: dict[str, Any] = {"error": reason}
        if end is not None and end.record is not None:
            self._usage = self._usage.merge(exits.usage_of(end.record))
            changes["exit_code"] = exits.exit_code(end.record)
        # The actor has stopped: it could not hear of a commit, so it records without waiting.
        self._set(transitions.ended(self._job, Status.FAILED, self._usage, self._now(), **changes))
        self._report_end()

    # --- running the job -------------------------------------------------------------------------

    def run(self) -> None:
        """Record the attempt, and start it once that record is durable (`_start_child`), so no crash
        can leave a process that no record counts. Returns at once."""
        crash_point("before-record")
        queued = self._job
        attempt = transitions.attempt_begun(queued, queued.attempts + 1, self._stamp())
        self._record_then(attempt, self._start_child, if_lost=lambda: self._not_started(queued))

    def _start_child(self) -> None:
        crash_point("after-record")
        if self._stop_reason is not None:  # canceled or interrupted while the attempt was being recorded
            self._not_run(self._stop_reason)
            return
        job, attempt = self._job, self._job.attempts
        assert self._keeper is not None and self._spawn is not None, "a run needs the keeper"
        run = protocol.run_id(job.id, attempt)
        self._keeper.follow(run, self._on_end)  # before the spawn: its end cannot be missed
        try:
            if job.cwd is not None:  # checked again: the directory may have been swapped for a symlink
                resolve_cwd(self._settings.cwd_root, job.cwd)
            child = self._spawn(with_visible_devices(job, self._settings.node), self._dir, attempt)
        except KeeperLost as exc:
            # The keeper died before it answered: whether it started the run is unknown. The link ends
            # whatever of it exists and tells its end (run_ended): started again, or counted.
            log.warning("job %s: the keeper was lost while starting attempt %d: %s", job.id, attempt, exc)
            self._run = run
            return
        except (ValueError, KeeperError, OSError) as exc:
            self._keeper.unfollow(run)
            self._finish(Status.FAILED, error=exits.start_error(job, exc))
            return
        self._run = run
        crash_point("after-spawn")
        self._set(transitions.started(job, child.pid, child.pid_started_at, attempt, job.started_at or self._stamp()))
        log.debug("job %s: IN_PROGRESS pid=%d attempt=%d", job.id, child.pid, attempt)
        self._dispatcher.job_started.defer(self._job)
        self._watch(child.pid, child.pid_started_at, self._job.timeout_seconds)

    def adopt(self) -> None:
        """Follow the run a previous server started (the keeper still runs it, or its exit record is
        on disk): from here on, as if this Supervisor had started it."""
        job = self._job
        assert self._keeper is not None and job.pid is not None and job.pid_started_at is not None
        run = protocol.run_id(job.id, job.attempts)
        self._run = run
        self._keeper.follow(run, self._on_end, job.pid, job.pid_started_at)
        timeout_in = None
        if job.timeout_seconds is not None and job.started_at is not None:
            elapsed = (self._now() - parse_timestamp(job.started_at)).total_seconds()
            timeout_in = max(0.0, job.timeout_seconds - elapsed)
        self._watch(job.pid, job.pid_started_at, timeout_in)
        self._keeper.settle(run, self._dir.path, job.attempts)  # ended while no server listened

    def _not_run(self, reason: StopReason) -> None:
        """A cancel or a shutdown came before the run was started: the attempt is taken back."""
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
        """Record that a cancel was asked for, then ask the keeper to end the run's tree; the job ends
        CANCELED. Returns at once; the Dispatcher's event is set once the tree is gone and CANCELED is
        committed. Does nothing if the job already ended."""
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None:
            return
        if self._run is None:  # its attempt is still being recorded: it will not start
            self._stop_reason = StopReason.CANCEL
            return
        requested = transitions.cancel_requested(self._job, self._stamp())
        self._record_then(requested, lambda: self._end_tree(StopReason.CANCEL), if_lost=None)

    def interrupt(self) -> None:
        """Like cancel, for a server shutdown: the job goes back to the queue for the next start."""
        if self._run is None and self._stop_reason is None and self._job.status is Status.IN_PROGRESS:
            self._stop_reason = StopReason.INTERRUPT  # its attempt is still being recorded
            return
        self._end_tree(StopReason.INTERRUPT)

    def fence(self, grace_s: float) -> None:
        """Cluster mode: the node's lease may lapse; end the run within `grace_s` (below the fencing
        margin), and the job goes back to the queue for whichever node claims it next."""
        if self._run is None and self._stop_reason is None and self._job.status is Status.IN_PROGRESS:
            self._stop_reason = StopReason.FENCE  # its attempt is still being recorded
            return
        self._end_tree(StopReason.FENCE, grace_s)

    def run_ended(self, end: End) -> None:
        """From the KeeperLink: the run is over, its whole tree gone. `end.record` is what the keeper
        observed; without one (the keeper was lost) no exit code is reported."""
        if self._job.status is not Status.IN_PROGRESS or end.run != self._run:
            return
        if self._monitor is not None:
            self._monitor.forget(end.run)
        if end.record is None:
            if not end.may_have_run:
                self._start_again(end.lost or "the keeper was lost before it started the job")
                return
            self._lost(end.lost or "the run was lost")
            return
        if self._stop_reason is None and end.record.get("stopped") == StopReason.FENCE.value:
            self._stop_reason = StopReason.FENCE  # the keeper's own fence: the server died or was cut off
        self._usage = self._usage.merge(exits.usage_of(end.record))
        self._conclude(exits.exit_code(end.record), exits.ended_at(end.record, self._now))

    def _on_end(self, end: End) -> None:
        """Called on the KeeperLink's reader thread: only hands the end to the actor's thread."""
        report(lambda: self._self.run_ended.defer(end))

    def _end_tree(self, reason: StopReason, grace_s: float | None = None) -> None:
        if self._job.status is not Status.IN_PROGRESS or self._stop_reason is not None or self._run is None:
            return
        assert self._keeper is not None
        self._stop_reason = reason
        try:
            self._keeper.stop(self._run, reason.value, grace_s)  # the end arrives as for any run
        except KeeperError as exc:  # the keeper is gone: the link ends the tree and reports it lost
            log.warning("job %s: could not ask the keeper to end the run: %s", self._job.id, exc)

    def _start_again(self, why: str) -> None:
        """The keeper died before it recorded the spawn intent: no process of this attempt ever
        existed, so it starts again under the same number (not counted), on the keeper the link
        brings up; a cancel or shutdown asked for meanwhile takes the attempt back instead."""
        self._run = None
        self._unstarted += 1
        if self._unstarted >= _UNSTARTED_LIMIT and self._stop_reason is None:
            self._finish(Status.FAILED, error=f"{why} ({self._unstarted} keepers in a row); not started again")
            return
        log.warning("job %s: %s; starting attempt %d again", self._job.id, why, self._job.attempts)
        self._start_child()

    def _lost(self, why: str) -> None:
        if self._stop_reason is StopReason.CANCEL:
            self._finish(Status.CANCELED, error="canceled by request")
            return
        after = transitions.interrupted(self._job, why, self._settings.restart_limit, self._stamp())
        log.warning("job %s: %s; %s", after.id, why, after.status.value)
        self._dispatcher.run_over.defer(after.id)
        self._record_then(after, self._report_end, if_lost=self._retry_later)

    def _conclude(self, code: int, now: datetime) -> None:
        if self._stop_reason in (StopReason.INTERRUPT, StopReason.FENCE):
            reason, limit = "interrupted by a server shutdown", self._settings.restart_limit
            if self._stop_reason is StopReason.FENCE:
                reason = "ended by its node's fence (its lease could not be renewed in time)"
            after = transitions.interrupted_run(self._job, code, self._usage, reason, limit, timestamp(now))
            log.debug("job %s: %s after shutdown", after.id, after.status.value)
            self._dispatcher.run_over.defer(after.id)
            self._record_then(after, self._report_end, if_lost=self._retry_later)
        elif self._stop_reason is StopReason.CANCEL:
            self._finish(Status.CANCELED, now, exit_code=code, error="canceled by request")
        elif self._stop_reason is StopReason.LIMIT:
            if self._job.max_output_bytes is not None:  # files are kept, cut to the limit
                limits.truncate_outputs(self._dir.stdout, self._dir.stderr, self._job.max_output_bytes)
            self._finish(Status.FAILED, now, exit_code=code, error=self._limit_error)
        elif code == 0:
            self._finish(Status.COMPLETED, now, exit_code=code)
        else:
            self._finish(Status.FAILED, now, exit_code=code, error=exits.exit_reason(code))

    def _finish(self, status: Status, now: datetime | None = None, **changes: Any) -> None:
        if self._monitor is not None and self._run is not None:
            self._monitor.forget(self._run)
        job = transitions.ended(self._job, status, self._usage, now or self._now(), **changes)
        if job.status is Status.IN_QUEUE:
            log.info(
                "job %s: attempt %d failed (%s); retry at %s", job.id, job.attempts, job.runs[-1].error, job.run_at
            )
        else:
            log.debug("job %s: %s exit_code=%s", job.id, status.value, job.exit_code)
        # The slot is free once the process is gone: the next job's attempt joins this end's commit.
        self._dispatcher.run_over.defer(job.id)
        self._record_then(job, self._report_end, if_lost=self._retry_later, sync=self._outputs())

    def _let_go(self) -> None:
        """Cluster mode: the database refused a record because the job's lease moved on: this node was
        cut off past its lease, and another node runs the job now. The job is not this node's to
        conclude (no webhook, no dependents failed, no state written): the Dispatcher frees its slot
        and forgets it. A run still going (a record made during it, such as a cancel request) is
        ended first, as its node's fence would; its end is refused in turn and comes back here."""
        if self._run is not None and self._job.status is Status.IN_PROGRESS:
            self._end_tree(StopReason.FENCE, self._settings.grace_s)
            return
        log.warning("job %s: another node runs it now (its lease moved on); let go without concluding it", self._job.id)
        if self._run is not None:
            if self._monitor is not None:
                self._monitor.forget(self._run)
            assert self._keeper is not None
            self._keeper.unfollow(self._run)  # its end is in (or it never started): nothing more to hear
        self._dispatcher.let_go.defer(self._job.id)
        self._finished.set()
        report(self.stop)

    def _report_end(self) -> None:
        # Order matters: the Dispatcher hears of the end before anyone woken by the event asks it.
        self._dispatcher.job_ended.defer(self._job)
        self._finished.set()
        report(self.stop)

    def _end_run_now(self, reason: str) -> End | None:
        """After a failure: end the run's tree through the keeper and wait (bounded) for its end."""
        assert self._keeper is not None and self._run is not None
        ended: list[End] = []
        done = threading.Event()

        def on_end(end: End) -> None:
            ended.append(end)
            done.set()

        self._keeper.follow(self._run, on_end)  # replaces the follower that would tell this dead actor
        self._keeper.settle(self._run, self._dir.path, self._job.attempts)
        try:
            self._keeper.stop(self._run, reason)
        except KeeperError as exc:
            log.warning("job %s: could not ask the keeper to end the run: %s", self._job.id, exc)
        if not done.wait(self._settings.grace_s + _FAILED_END_WAIT_S):
            log.error("job %s: its run did not end after the supervisor failed", self._job.id)
            return None
        return ended[0]

    # --- helpers ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return timestamp(self._now())

    def _outputs(self) -> tuple[str, ...]:
        return (str(self._dir.stdout), str(self._dir.stderr)) if self._run is not None else ()


SupervisorProxy: TypeAlias = "pykka.ActorProxy[Supervisor]"
