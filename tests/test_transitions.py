"""The pure pieces under the actors: a job's transitions, the backoff formula and the transient-retry loop."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from procq.actors import backoff, osdeps, transitions
from procq.actors.job import Delivery, DeliveryState, Job, JobRequest, Status, Usage, timestamp
from procq.actors.settings import Settings, WebhookPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _busy() -> OSError:
    exc = PermissionError(errno.EACCES, "in use")
    exc.winerror = 32  # type: ignore[attr-defined]
    return exc


def test_backoff_doubles_from_the_base_up_to_the_cap_and_jitter_keeps_half_to_all_of_it() -> None:
    assert [backoff.exponential(1.0, n, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert backoff.exponential(4.0, 1, 60.0, jitter=lambda: 0.0) == 2.0
    assert backoff.exponential(4.0, 1, 60.0, jitter=lambda: 1.0) == 4.0


def test_retry_transient_runs_again_while_windows_holds_the_file_and_returns_the_result() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _busy()
        return "read"

    assert osdeps.retry_transient(flaky, windows=True, sleep=lambda s: None) == "read"
    assert len(attempts) == 3


def test_retry_transient_raises_other_errors_at_once() -> None:
    slept: list[float] = []

    def missing() -> None:
        raise FileNotFoundError(errno.ENOENT, "gone")

    with pytest.raises(FileNotFoundError):
        osdeps.retry_transient(missing, windows=True, sleep=slept.append)
    assert slept == []


def test_a_failed_attempt_with_attempts_left_comes_back_queued_after_the_backoff() -> None:
    job = Job(
        id="0" * 32, args=("x",), status=Status.IN_PROGRESS, attempts=1, max_attempts=2, started_at=timestamp(NOW)
    )
    after = transitions.ended(job, Status.FAILED, Usage(), NOW + timedelta(seconds=1), rand=lambda: 1.0, exit_code=3)
    assert after.status is Status.IN_QUEUE and after.completed_at is None
    assert after.run_at == timestamp(NOW + timedelta(seconds=2))  # 1 s later, plus the 1 s backoff
    assert [run.exit_code for run in after.runs] == [3]


def test_the_last_failed_attempt_ends_the_job_and_owes_its_webhook() -> None:
    job = Job(id="0" * 32, args=("x",), webhook="http://127.0.0.1:9/h", status=Status.IN_PROGRESS, attempts=1)
    after = transitions.ended(job, Status.FAILED, Usage(), NOW, exit_code=1)
    assert (after.status, after.completed_at) == (Status.FAILED, timestamp(NOW))
    assert after.webhook_delivery == Delivery() and transitions.owes_delivery(after)


def test_delivery_attempts_go_pending_with_backoff_then_failed_or_delivered() -> None:
    policy = WebhookPolicy(max_attempts=2, backoff_base_s=1.0, backoff_cap_s=60.0)
    job = Job(id="0" * 32, args=("x",), status=Status.COMPLETED, webhook_delivery=Delivery())
    once = transitions.delivery_attempted(job, "HTTP 500 from the receiver", policy, NOW)
    assert once.webhook_delivery == Delivery(
        DeliveryState.PENDING, 1, "HTTP 500 from the receiver", timestamp(NOW + timedelta(seconds=1))
    )
    twice = transitions.delivery_attempted(once, "HTTP 500 from the receiver", policy, NOW)
    assert twice.webhook_delivery.state is DeliveryState.FAILED and not transitions.owes_delivery(twice)
    delivered = transitions.delivery_attempted(once, None, policy, NOW)
    assert delivered.webhook_delivery.state is DeliveryState.DELIVERED
    assert delivered.to_dict()["webhook_delivery"]["state"] == "delivered"
    assert Job.from_dict(delivered.to_dict()).webhook_delivery == delivered.webhook_delivery


def test_a_new_job_takes_the_server_defaults_its_request_leaves_open() -> None:
    settings = Settings(jobs_dir=Path("."), default_timeout_s=30.0)
    job = transitions.new_job("0" * 32, JobRequest(args=("x",), delay_seconds=5), NOW, settings)
    assert (job.status, job.timeout_seconds, job.run_at) == (
        Status.IN_QUEUE,
        30.0,
        timestamp(NOW + timedelta(seconds=5)),
    )
