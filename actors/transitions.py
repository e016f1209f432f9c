"""Every change of a job, as pure functions Job -> Job: new, started, ended, retried, interrupted,
canceled, and each webhook delivery attempt. Actors decide when; these say what the job becomes."""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from procq.actors import backoff
from procq.actors.job import Delivery, DeliveryState, Job, JobRequest, Run, Status, Usage, parse_timestamp, timestamp
from procq.actors.settings import Settings, WebhookPolicy

MAX_RETRY_DELAY_S = 3600.0  # a job's retry backoff grows no further than an hour between attempts
_SHARED_FIELDS = tuple(
    f.name for f in dataclasses.fields(JobRequest) if f.name in {g.name for g in dataclasses.fields(Job)}
)


class StopReason(enum.Enum):
    """Why a Supervisor is ending a running job's process tree."""

    CANCEL = "cancel"  # asked by a client: the job ends CANCELED
    INTERRUPT = "interrupt"  # a server shutdown: the job goes back to the queue
    LIMIT = "limit"  # a timeout, memory or output limit: the job ends FAILED (or is retried)
    FENCE = "fenced"  # cluster mode: the node's lease may lapse; the job goes back to the queue


# --- a job comes to be -----------------------------------------------------------------------------


def new_job(job_id: str, request: JobRequest, now: datetime, settings: Settings, **extra: Any) -> Job:
    """The IN_QUEUE job a validated request asks for; server defaults fill the limits it leaves open.
    Every request field the Job also has is copied as is (so fields other features add travel too)."""
    fields = {name: getattr(request, name) for name in _SHARED_FIELDS}
    if request.delay_seconds is not None:
        fields["run_at"] = timestamp(now + timedelta(seconds=request.delay_seconds))
    if request.timeout_seconds is None:
        fields["timeout_seconds"] = settings.default_timeout_s
    if request.max_output_bytes is None:
        fields["max_output_bytes"] = settings.default_max_output_bytes
    fields["env"] = dict(request.env)
    fields["requires"] = dict(request.requires)
    return Job(id=job_id, enqueued_at=timestamp(now), **fields, **extra)


def rerun_request(job: Job) -> JobRequest:
    """The request behind `job`, for POST /jobs/{id}/rerun: it runs now, its dependencies are not
    waited for again, and its limits are the ones the original job ran with."""
    fields = {name: getattr(job, name) for name in _SHARED_FIELDS}
    fields.update(run_at=None, after=(), env=tuple(sorted(job.env.items())), requires=tuple(job.requires.items()))
    return JobRequest(**fields)


# --- while it is queued ----------------------------------------------------------------------------


def canceled_while_queued(job: Job, now: str) -> Job:
    """A queued job canceled by request: it never ran."""
    return _terminal(job, Status.CANCELED, now, error="canceled by request before it started")


def failed_without_running(job: Job, reason: str, now: str) -> Job:
    """A queued job that can never run (a dependency failed): FAILED, with the reason."""
    return _terminal(job, Status.FAILED, now, error=reason)


# --- a run -----------------------------------------------------------------------------------------


def attempt_begun(job: Job, attempt: int, now: str) -> Job:
    """Attempt `attempt` is about to start: recorded (durably) before its process exists, so a crash
    at any instant finds it counted. Nothing of an earlier attempt stays outside `runs`."""
    return dataclasses.replace(
        job,
        status=Status.IN_PROGRESS,
        attempts=attempt,
        started_at=now,
        pid=None,
        pid_started_at=None,
        exit_code=None,
        error=None,
        cancel_requested_at=None,
    )


def attempt_not_started(job: Job) -> Job:
    """A recorded attempt whose process was never started (the server died in between): it does not
    count; the job is queued as it was."""
    return dataclasses.replace(
        job, status=Status.IN_QUEUE, attempts=job.attempts - 1, started_at=None, pid=None, pid_started_at=None
    )


def started(job: Job, pid: int, pid_started_at: float, attempt: int, now: str) -> Job:
    """The child of attempt `attempt` is running."""
    return dataclasses.replace(
        job, status=Status.IN_PROGRESS, pid=pid, pid_started_at=pid_started_at, attempts=attempt, started_at=now
    )


def cancel_requested(job: Job, now: str) -> Job:
    """A client asked to cancel the running job; recorded before its tree is ended, so a crash in the
    middle ends it CANCELED at the next start instead of running it again."""
    return dataclasses.replace(job, cancel_requested_at=now)


def canceled_at_restart(job: Job, now: str) -> Job:
    """A job the server found IN_PROGRESS with a cancel requested: its tree was being ended when the
    server stopped."""
    cut = interrupted(job, "canceled by request; the server stopped while ending it", 1 << 30, now)
    return _terminal(cut, Status.CANCELED, now, error="canceled by request (the server stopped while ending it)")


def ended(
    job: Job,
    status: Status,
    usage: Usage,
    now: datetime,
    rand: Callable[[], float] = random.random,
    **changes: Any,
) -> Job:
    """The job after its run ended with `status` (and `changes`: exit_code, error...), the run recorded.
    A FAILED attempt that may be retried comes back IN_QUEUE with run_at = now + backoff (`retried`)."""
    stamp = timestamp(now)
    after = with_run(dataclasses.replace(job, status=status, **changes), usage, stamp)
    if may_retry(after):
        return retried(after, now, rand)
    return _terminal(after, status, stamp)


def may_retry(job: Job) -> bool:
    """A FAILED attempt is retried while attempts remain; a job that never started (attempts 0:
    procq itself failed) is not, so a bug cannot loop."""
    return job.status is Status.FAILED and 1 <= job.attempts < job.max_attempts


def retry_delay(base_s: float, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next attempt of a job that failed `failures` times (jittered backoff)."""
    return backoff.exponential(base_s, failures, MAX_RETRY_DELAY_S, rand)


def retried(job: Job, now: datetime, rand: Callable[[], float] = random.random) -> Job:
    """The job after a failed attempt that may be tried again: IN_QUEUE with run_at = now + backoff."""
    run_at = now + timedelta(seconds=retry_delay(job.retry_backoff_seconds, job.attempts, rand))
    return dataclasses.replace(
        job,
        status=Status.IN_QUEUE,
        run_at=timestamp(run_at),
        pid=None,
        pid_started_at=None,
        started_at=None,
        exit_code=None,
        error=None,
        assigned=None,  # the next attempt is given its own GPUs and units
    )


def interrupted(job: Job, reason: str, restart_limit: int, now: str) -> Job:
    """The job after a shutdown or crash cut its run short: queued to run again, or FAILED once it
    has been started `restart_limit` times (a job that keeps crashing the server must not loop)."""
    runs = job.runs
    if job.attempts and all(run.attempt != job.attempts for run in runs):  # a crash: the Supervisor left none
        runs = (*runs, Run(job.attempts, job.started_at, now, job.exit_code, reason))
    cleared = dataclasses.replace(
        job, pid=None, pid_started_at=None, started_at=None, interrupted=reason, runs=runs, assigned=None
    )
    if job.attempts >= restart_limit + job.max_attempts - 1:  # a job's own retries do not count as restarts
        error = f"{reason}; not run again: it was started {job.attempts} times (limit {restart_limit})"
        return dataclasses.replace(cleared, status=Status.FAILED, error=error, completed_at=now)
    # Queued again: what the cut run measured (exit code, error, usage) is in `runs`, not shown as current.
    return dataclasses.replace(
        cleared,
        status=Status.IN_QUEUE,
        exit_code=None,
        error=None,
        completed_at=None,
        resources=None,
        cancel_requested_at=None,
    )


def interrupted_run(job: Job, exit_code: int | None, usage: Usage, reason: str, restart_limit: int, now: str) -> Job:
    """A shutdown ended the run the Supervisor was following: its record kept, then `interrupted`."""
    cut = with_run(dataclasses.replace(job, exit_code=exit_code, error=reason), usage, now)
    job = dataclasses.replace(job, runs=cut.runs, resources=cut.resources)
    after = interrupted(job, reason, restart_limit, now)
    return dataclasses.replace(after, exit_code=exit_code) if after.status is Status.FAILED else after


def with_run(job: Job, usage: Usage, completed_at: str) -> Job:
    """`job` with the record of the attempt that just ended (none if it never started, or is recorded)."""
    if job.attempts == 0 or any(run.attempt == job.attempts for run in job.runs):
        return job
    run = run_record(job, usage, completed_at)
    return dataclasses.replace(job, runs=(*job.runs, run), resources=resources_of(run))


def run_record(job: Job, usage: Usage, completed_at: str) -> Run:
    """The record of the attempt `job` just finished (its fields hold that attempt's outcome)."""
    wall = None
    if job.started_at:
        wall = round((parse_timestamp(completed_at) - parse_timestamp(job.started_at)).total_seconds(), 6)
    return Run(
        attempt=job.attempts,
        started_at=job.started_at,
        completed_at=completed_at,
        exit_code=job.exit_code,
        error=job.error,
        wall_seconds=wall,
        cpu_user_seconds=round(usage.cpu_user_s, 6),
        cpu_system_seconds=round(usage.cpu_system_s, 6),
        peak_rss_bytes=usage.peak_rss_bytes,
        peak_gpu_memory_bytes=usage.peak_gpu_memory_bytes,
    )


def resources_of(run: Run) -> dict[str, Any]:
    return {
        "wall_seconds": run.wall_seconds,
        "cpu_user_seconds": run.cpu_user_seconds,
        "cpu_system_seconds": run.cpu_system_seconds,
        "peak_rss_bytes": run.peak_rss_bytes,
        "peak_gpu_memory_bytes": run.peak_gpu_memory_bytes,
    }


# --- the completion webhook ------------------------------------------------------------------------


def completion_delivery(job: Job) -> Delivery | None:
    """A pending completion webhook if the job has a webhook and wants the `completed` event."""
    return Delivery() if job.webhook and "completed" in job.webhook_events else None


def owes_delivery(job: Job) -> bool:
    """True while a finished job's completion webhook is still to be (re)tried."""
    delivery = job.webhook_delivery
    return job.status.terminal and delivery is not None and delivery.state is DeliveryState.PENDING


def delivery_attempted(job: Job, error: str | None, policy: WebhookPolicy, now: datetime) -> Job:
    """The job after one delivery attempt: delivered, pending with the next attempt's time, or failed
    once `policy.max_attempts` are spent. A webhook never changes the job's outcome."""
    before = job.webhook_delivery or Delivery()
    attempts = before.attempts + 1
    if error is None:
        after = Delivery(DeliveryState.DELIVERED, attempts, before.last_error, None, timestamp(now))
    elif attempts >= policy.max_attempts:
        after = Delivery(DeliveryState.FAILED, attempts, error)
    else:
        retry_at = now + timedelta(seconds=policy.delay_after(attempts))
        after = Delivery(DeliveryState.PENDING, attempts, error, timestamp(retry_at))
    return dataclasses.replace(job, webhook_delivery=after)


def delivery_abandoned(job: Job, reason: str) -> Job:
    """A pending delivery procq itself failed to make (a bug): recorded as failed, not retried."""
    assert job.webhook_delivery is not None
    return dataclasses.replace(
        job, webhook_delivery=dataclasses.replace(job.webhook_delivery, state=DeliveryState.FAILED, last_error=reason)
    )


def _terminal(job: Job, status: Status, now: str, **changes: Any) -> Job:
    done = dataclasses.replace(job, status=status, completed_at=now, **changes)
    return dataclasses.replace(done, webhook_delivery=completion_delivery(done))
