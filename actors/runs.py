"""A job's runs: the job a request makes, the record each attempt leaves, and when a retry may start."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from procq.actors.job import Delivery, Job, JobRequest, Run, Status, parse_timestamp, timestamp
from procq.actors.settings import Settings

MAX_RETRY_DELAY_S = 3600.0  # backoff grows no further than an hour between attempts
_SHARED_FIELDS = tuple(
    f.name for f in dataclasses.fields(JobRequest) if f.name in {g.name for g in dataclasses.fields(Job)}
)


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


def completion_delivery(job: Job) -> Delivery | None:
    """A pending completion webhook if the job has a webhook and wants the `completed` event."""
    return Delivery() if job.webhook and "completed" in job.webhook_events else None


def failed_without_running(job: Job, reason: str, now: str) -> Job:
    """A queued job that can never run (a dependency failed): FAILED, with the reason."""
    return dataclasses.replace(
        job, status=Status.FAILED, error=reason, completed_at=now, webhook_delivery=completion_delivery(job)
    )


def retry_delay(base_s: float, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: base * 2**(failures-1), capped, times a random 0.5..1.0 so
    jobs that failed together do not all come back at the same instant."""
    return min(MAX_RETRY_DELAY_S, base_s * 2 ** (failures - 1)) * (0.5 + rand() / 2)


def requeued_for_retry(job: Job, now: datetime) -> Job:
    """The job after a failed attempt that may be tried again: IN_QUEUE with run_at = now + backoff."""
    run_at = now + timedelta(seconds=retry_delay(job.retry_backoff_seconds, job.attempts))
    return dataclasses.replace(
        job,
        status=Status.IN_QUEUE,
        run_at=timestamp(run_at),
        pid=None,
        pid_started_at=None,
        started_at=None,
        exit_code=None,
        error=None,
        assigned=None,  # the next attempt is given its own
    )


def may_retry(job: Job) -> bool:
    """A FAILED attempt is retried while attempts remain; a job that never started (attempts 0:
    procq itself failed) is not, so a bug cannot loop."""
    return job.status is Status.FAILED and 1 <= job.attempts < job.max_attempts


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Resource usage of one run's process tree, as far as sampling saw it."""

    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_gpu_memory_bytes: int | None = None  # None: not measured (no GPU, or no management library)

    def merge(self, other: Usage) -> Usage:
        gpu = [value for value in (self.peak_gpu_memory_bytes, other.peak_gpu_memory_bytes) if value is not None]
        return Usage(
            max(self.cpu_user_s, other.cpu_user_s),
            max(self.cpu_system_s, other.cpu_system_s),
            max(self.peak_rss_bytes, other.peak_rss_bytes),
            max(gpu) if gpu else None,
        )


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


def resolve_cwd(root: Path | None, cwd: str) -> Path:
    """The directory `cwd` names inside `root` (relative to it, or absolute), symlinks resolved.
    Raises ValueError saying why when there is no root, or it is missing, not a directory, or outside."""
    if root is None:
        raise ValueError("cwd: this server has no --cwd-root, so jobs run in their own directory only")
    base = root.resolve()
    try:
        path = (base / cwd).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"cwd: {cwd!r} does not exist inside the cwd root ({exc.__class__.__name__})") from exc
    if not path.is_relative_to(base):
        raise ValueError(
            f"cwd: {cwd!r} resolves to a place outside the cwd root; only directories inside it are allowed"
        )
    if not path.is_dir():
        raise ValueError(f"cwd: {cwd!r} is not a directory")
    return path
