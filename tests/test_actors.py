"""The Dispatcher and its Supervisors driven directly through pykka: real child processes, no HTTP."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pykka
import pytest
from pykka.messages import ProxyCall

from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.errors import JobConflict, JobNotFound, StorageError
from procq.actors.job import JobRequest, Status
from procq.actors.jobdir import JobDir
from procq.actors.settings import Settings
from procq.actors.supervise.supervisor import Supervisor
from procq.actors.webhookpool import WebhookPool
from tests.helpers import Receiver, pid_alive, py, wait_until

ASK = 10


def _start(settings: Settings, **kw: object) -> pykka.ActorProxy:
    return Dispatcher.start(settings, **kw).proxy()


def _submit(dispatcher: pykka.ActorProxy, args: list[str], **fields: object) -> str:
    return dispatcher.submit(JobRequest(args=tuple(args), **fields)).get(timeout=ASK).id


def _wait_status(dispatcher: pykka.ActorProxy, job_id: str, *statuses: Status, timeout: float = 15):
    return wait_until(lambda: (job := dispatcher.get(job_id).get(timeout=ASK)).status in statuses and job, timeout)


def _wait_delivery(dispatcher: pykka.ActorProxy, job_id: str, state: str):
    def reached():
        job = dispatcher.get(job_id).get(timeout=ASK)
        return job.webhook_delivery is not None and job.webhook_delivery.state == state and job

    return wait_until(reached, timeout=15)


def test_a_job_completes_and_its_meta_on_disk_matches_the_index(settings: Settings) -> None:
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, py("print('out'); import sys; sys.stderr.write('log')"))
    job = _wait_status(dispatcher, job_id, Status.COMPLETED)
    assert job.exit_code == 0 and job.attempts == 1 and job.pid
    jobdir = JobDir(settings.jobs_dir / job_id)
    assert jobdir.read() == job
    assert jobdir.stdout.read_bytes().strip() == b"out" and jobdir.stderr.read_bytes() == b"log"


def test_nonzero_exit_marks_job_failed(settings: Settings) -> None:
    dispatcher = _start(settings)
    job = _wait_status(dispatcher, _submit(dispatcher, py("raise SystemExit(3)")), Status.FAILED)
    assert job.exit_code == 3 and "code 3" in job.error


def test_a_command_that_cannot_start_fails_with_the_reason(settings: Settings) -> None:
    dispatcher = _start(settings)
    job = _wait_status(dispatcher, _submit(dispatcher, ["/no/such/command"]), Status.FAILED)
    assert "could not start '/no/such/command'" in job.error and job.exit_code is None


def test_jobs_wait_in_fifo_order_for_a_free_worker(settings: Settings, jobs_dir: Path) -> None:
    settings = Settings(jobs_dir=jobs_dir, workers=1, grace_s=1)
    dispatcher = _start(settings)
    ids = [_submit(dispatcher, py("import time; time.sleep(0.05)")) for _ in range(5)]
    jobs = [_wait_status(dispatcher, i, Status.COMPLETED) for i in ids]
    starts = [j.started_at for j in jobs]
    assert starts == sorted(starts)
    assert all(a.completed_at <= b.started_at for a, b in zip(jobs, jobs[1:], strict=False))  # one at a time


def test_ten_thousand_queued_jobs_do_not_mean_ten_thousand_threads(settings: Settings, jobs_dir: Path) -> None:
    dispatcher = _start(Settings(jobs_dir=jobs_dir, workers=2, grace_s=1))
    blockers = [_submit(dispatcher, py("import time; time.sleep(30)")) for _ in range(2)]
    for _ in range(300):  # queued behind the blockers; each would be a thread if Supervisors existed early
        _submit(dispatcher, ["true"])
    _wait_status(dispatcher, blockers[1], Status.IN_PROGRESS)
    # 2 supervisors + 2 waiters + the dispatcher + pytest's own: bounded by workers plus a constant
    assert threading.active_count() <= 2 * 2 + 8
    for job_id in blockers:
        dispatcher.cancel(job_id).get(timeout=ASK).wait(10)


def test_cancel_of_a_queued_job_marks_it_canceled_without_running(settings: Settings, jobs_dir: Path) -> None:
    dispatcher = _start(Settings(jobs_dir=jobs_dir, workers=1, grace_s=1))
    blocker = _submit(dispatcher, py("import time; time.sleep(30)"))
    queued = _submit(dispatcher, ["true"])
    assert dispatcher.cancel(queued).get(timeout=ASK).wait(1)
    job = dispatcher.get(queued).get(timeout=ASK)
    assert job.status is Status.CANCELED and job.attempts == 0 and job.pid is None
    assert JobDir(jobs_dir / queued).read().status is Status.CANCELED
    dispatcher.cancel(blocker).get(timeout=ASK).wait(10)


def test_cancel_of_a_running_job_ends_its_whole_tree(settings: Settings) -> None:
    dispatcher = _start(settings)
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(flush=True); time.sleep(60)"
    job_id = _submit(dispatcher, py(script))
    running = _wait_status(dispatcher, job_id, Status.IN_PROGRESS)
    import psutil

    children = wait_until(lambda: psutil.Process(running.pid).children(recursive=True))
    assert dispatcher.cancel(job_id).get(timeout=ASK).wait(10)
    job = dispatcher.get(job_id).get(timeout=ASK)
    assert job.status is Status.CANCELED and job.error == "canceled by request"
    assert not pid_alive(running.pid) and not any(pid_alive(c.pid) for c in children)


def test_cancel_of_a_finished_job_is_a_conflict_and_unknown_ids_are_not_found(settings: Settings) -> None:
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, ["true"])
    _wait_status(dispatcher, job_id, Status.COMPLETED)
    with pytest.raises(JobConflict, match="COMPLETED"):
        dispatcher.cancel(job_id).get(timeout=ASK)
    with pytest.raises(JobNotFound):
        dispatcher.get("f" * 32).get(timeout=ASK)


def test_a_job_directory_that_cannot_be_made_fails_that_submit_only(settings: Settings, jobs_dir: Path) -> None:
    ids = iter(["a" * 32, "b" * 32])
    dispatcher = _start(settings, new_id=lambda: next(ids))
    (jobs_dir / f".new-{'a' * 32}").write_text("in the way")  # its directory cannot be built
    accepted = dispatcher.accept([JobRequest(args=("true",))]).get(timeout=ASK)
    with pytest.raises(StorageError, match="Could not create"):
        accepted.wait(ASK)
    assert not (jobs_dir / ("a" * 32)).exists()
    wait_until(lambda: _missing(dispatcher, "a" * 32))  # forgotten: it was never stored
    job_id = _submit(dispatcher, ["true"])  # the dispatcher kept serving
    assert _wait_status(dispatcher, job_id, Status.COMPLETED)


def _missing(dispatcher: pykka.ActorProxy, job_id: str) -> bool:
    try:
        dispatcher.get(job_id).get(timeout=ASK)
    except JobNotFound:
        return True
    return False


def test_the_webhook_is_delivered_once_the_job_ends(settings: Settings, receiver: Receiver) -> None:
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, ["true"], webhook=receiver.url)
    assert receiver.wait_for(1) == [
        {"id": job_id, "status": "COMPLETED", "result_url": f"/jobs/{job_id}/result", "status_url": f"/jobs/{job_id}"}
    ]
    job = _wait_delivery(dispatcher, job_id, "delivered")
    assert job.webhook_delivery.attempts == 1 and job.webhook_delivery.delivered_at
    assert JobDir(settings.jobs_dir / job_id).read().webhook_delivery.state == "delivered"


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(settings: Settings, receiver: Receiver) -> None:
    receiver.fail_next = 2
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, py("raise SystemExit(1)"), webhook=receiver.url)
    assert receiver.wait_for(1)[0]["status"] == "FAILED"
    job = _wait_delivery(dispatcher, job_id, "delivered")
    assert job.webhook_delivery.attempts == 3 and "HTTP 500" in job.webhook_delivery.last_error
    assert receiver.attempts == 3


def test_a_receiver_that_never_answers_ends_as_a_failed_delivery(settings: Settings) -> None:
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, ["true"], webhook="http://127.0.0.1:9/unreachable")
    job = _wait_delivery(dispatcher, job_id, "failed")
    assert job.status is Status.COMPLETED  # a webhook never changes the job's outcome
    assert job.webhook_delivery.attempts == settings.webhook.max_attempts
    assert "ConnectionError" in job.webhook_delivery.last_error


def test_a_bug_while_starting_a_job_fails_that_job_and_frees_its_slot(settings: Settings) -> None:
    def broken_spawn(job, jobdir, attempt):
        raise RuntimeError("spawner bug")

    dispatcher = _start(Settings(jobs_dir=settings.jobs_dir, workers=1), spawn=broken_spawn)
    first, second = _submit(dispatcher, ["true"]), _submit(dispatcher, ["true"])
    for job_id in (first, second):  # the second one ran too: the slot was given back
        job = _wait_status(dispatcher, job_id, Status.FAILED)
        assert "internal error in procq" in job.error and "spawner bug" in job.error


def test_a_bug_while_a_job_runs_ends_its_tree_then_fails_it_and_frees_its_slot(settings: Settings) -> None:
    dispatcher = _start(Settings(jobs_dir=settings.jobs_dir, workers=1))
    running = _submit(dispatcher, ["sleep", "60"])
    pid = _wait_status(dispatcher, running, Status.IN_PROGRESS).pid
    [supervisor] = pykka.ActorRegistry.get_by_class(Supervisor)
    supervisor.tell(ProxyCall(attr_path=("run_ended",), args=("not an End",), kwargs={}))  # a bug in a handler
    job = _wait_status(dispatcher, running, Status.FAILED)
    assert "internal error in procq" in job.error and not pid_alive(pid)
    assert job.exit_code is not None  # the failed Supervisor waited (off its pool) for the run's end
    after = _submit(dispatcher, ["true"])  # the slot was given back
    assert _wait_status(dispatcher, after, Status.COMPLETED)


def test_a_bug_while_delivering_a_webhook_is_recorded_and_frees_the_delivery_slot(settings: Settings) -> None:
    def broken_sender(url, body, timeout_s):
        raise RuntimeError("sender bug")

    dispatcher = _start(dataclasses.replace(settings, webhook_concurrency=1), send_webhook=broken_sender)
    ids = [_submit(dispatcher, ["true"], webhook="http://127.0.0.1:9/h") for _ in range(2)]
    for job_id in ids:
        job = _wait_delivery(dispatcher, job_id, "failed")
        assert job.status is Status.COMPLETED and "sender bug" in job.webhook_delivery.last_error


class _CountingPool(WebhookPool):
    """A real pool that also counts the attempts it was given."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.attempts = 0

    def run(self, attempt: Any, *args: Any) -> None:
        self.attempts += 1
        super().run(attempt, *args)


def test_every_webhook_of_every_job_runs_on_the_pool_the_dispatcher_was_given(
    settings: Settings, receiver: Receiver
) -> None:
    pool = _CountingPool(2)
    dispatcher = _start(settings, webhook_pool=pool)
    ids = [_submit(dispatcher, ["true"], webhook=receiver.url, webhook_events=("start", "completed")) for _ in range(3)]
    received = receiver.wait_for(6)
    assert sorted(body["id"] for body in received) == sorted(ids * 2)
    for job_id in ids:
        _wait_delivery(dispatcher, job_id, "delivered")
    assert pool.attempts == 6  # three start webhooks and three completions: none on a thread of their own
    pool.close()
