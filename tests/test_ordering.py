"""What starts when: priority with aging, named queues, pause/resume, run_at, dependencies (real processes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pykka
import pytest

from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.dispatch.recovery import load_jobs
from procq.actors.job import JobRequest, Status, parse_timestamp
from procq.actors.settings import Settings
from tests.helpers import py, wait_until

ASK = 10


def _start(settings: Settings, **kw: object) -> pykka.ActorProxy:
    return Dispatcher.start(settings, **kw).proxy()


def _submit(dispatcher: pykka.ActorProxy, args: list[str], **fields: object) -> str:
    return dispatcher.submit(JobRequest(args=tuple(args), **fields)).get(timeout=ASK).id


def _job(dispatcher: pykka.ActorProxy, job_id: str):
    return dispatcher.get(job_id).get(timeout=ASK)


def _wait_status(dispatcher: pykka.ActorProxy, job_id: str, *statuses: Status, timeout: float = 15):
    return wait_until(lambda: (job := _job(dispatcher, job_id)).status in statuses and job, timeout)


@pytest.fixture
def gate(settings: Settings) -> Iterator[Path]:
    """The file gated jobs wait for; created at teardown too, so a failed test leaves no job running."""
    path = settings.jobs_dir.parent / "go"
    yield path
    path.touch()


def _gate(path: Path) -> list[str]:
    """A job that runs until `path` exists: the test decides when it ends."""
    return py(f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.01)")


def _append(log: Path, name: str) -> list[str]:
    """A job that appends its name to `log`: with one worker, the file is the start order."""
    return py(f"open({str(log)!r}, 'a').write({name + chr(10)!r})")


def _queue(dispatcher: pykka.ActorProxy, name: str) -> dict:
    return next(q for q in dispatcher.queues().get(timeout=ASK) if q["name"] == name)


class Clock:
    """A clock the test moves by hand (only for the Dispatcher's ordering decisions)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_higher_priority_starts_first_and_equal_priorities_keep_submission_order(
    settings: Settings, gate: Path
) -> None:
    dispatcher = _start(dataclasses.replace(settings, workers=1))
    log = settings.jobs_dir.parent / "order.txt"
    blocker = _submit(dispatcher, _gate(gate))
    _wait_status(dispatcher, blocker, Status.IN_PROGRESS)
    names = [("low", -5), ("first0", 0), ("high", 10), ("second0", 0), ("mid", 3)]
    ids = [_submit(dispatcher, _append(log, name), priority=priority) for name, priority in names]
    gate.touch()
    for job_id in ids:
        _wait_status(dispatcher, job_id, Status.COMPLETED)
    assert log.read_text().split() == ["high", "mid", "first0", "second0", "low"]


def test_a_low_priority_job_that_waited_long_enough_goes_before_a_newer_high_priority_one(
    settings: Settings, gate: Path
) -> None:
    # Rule: effective priority = priority + seconds waited / aging_s. With aging_s = 60, a job that
    # waited 10 minutes counts as priority 10.
    clock = Clock()
    dispatcher = _start(dataclasses.replace(settings, workers=1, aging_s=60.0), now=clock)
    log = settings.jobs_dir.parent / "order.txt"
    blocker = _submit(dispatcher, _gate(gate))
    _wait_status(dispatcher, blocker, Status.IN_PROGRESS)
    old_low = _submit(dispatcher, _append(log, "old_low"), priority=0)
    clock.now += timedelta(minutes=10)
    newer_9 = _submit(dispatcher, _append(log, "newer_9"), priority=9)  # 9 < 0 + 10 minutes of aging
    newer_11 = _submit(dispatcher, _append(log, "newer_11"), priority=11)  # 11 > 10: still ahead
    gate.touch()
    for job_id in (old_low, newer_9, newer_11):
        _wait_status(dispatcher, job_id, Status.COMPLETED)
    assert log.read_text().split() == ["newer_11", "old_low", "newer_9"]


def test_each_queue_has_its_own_parallelism_under_the_global_worker_limit(settings: Settings, gate: Path) -> None:
    dispatcher = _start(dataclasses.replace(settings, workers=3, queues=(("gpu", 1),)))
    gpu = [_submit(dispatcher, _gate(gate), queue="gpu") for _ in range(2)]
    cpu = [_submit(dispatcher, _gate(gate)) for _ in range(3)]
    wait_until(lambda: _queue(dispatcher, "default")["running"] == 2)
    # one GPU job runs although four CPU jobs want slots; the third CPU job waits for the global limit
    assert _queue(dispatcher, "gpu") == {"name": "gpu", "parallelism": 1, "paused": False, "queued": 1, "running": 1}
    assert _queue(dispatcher, "default")["queued"] == 1

    def running() -> list[str]:
        return [job_id for job_id in gpu + cpu if _job(dispatcher, job_id).status is Status.IN_PROGRESS]

    wait_until(lambda: len(running()) == 3)
    assert gpu[0] in running() and gpu[1] not in running()
    gate.touch()
    for job_id in gpu + cpu:
        _wait_status(dispatcher, job_id, Status.COMPLETED)


def test_a_paused_queue_starts_nothing_new_until_it_is_resumed(settings: Settings, gate: Path) -> None:
    dispatcher = _start(dataclasses.replace(settings, workers=2))
    running = _submit(dispatcher, _gate(gate), queue="batch")
    _wait_status(dispatcher, running, Status.IN_PROGRESS)
    view = dispatcher.set_queue("batch", paused=True).get(timeout=ASK)
    assert view["paused"] is True and view["running"] == 1
    waiting = _submit(dispatcher, py("pass"), queue="batch")
    other = _submit(dispatcher, py("pass"))  # other queues go on
    _wait_status(dispatcher, other, Status.COMPLETED)
    gate.touch()
    _wait_status(dispatcher, running, Status.COMPLETED)  # the running job went on
    assert _job(dispatcher, waiting).status is Status.IN_QUEUE
    dispatcher.set_queue("batch", paused=False).get(timeout=ASK)
    _wait_status(dispatcher, waiting, Status.COMPLETED)


def test_raising_a_queues_parallelism_starts_waiting_jobs_at_once(settings: Settings, gate: Path) -> None:
    dispatcher = _start(dataclasses.replace(settings, workers=4, queues=(("one", 1),)))
    ids = [_submit(dispatcher, _gate(gate), queue="one") for _ in range(3)]
    wait_until(lambda: _queue(dispatcher, "one")["running"] == 1)
    dispatcher.set_queue("one", parallelism=3).get(timeout=ASK)
    wait_until(lambda: _queue(dispatcher, "one")["running"] == 3)
    gate.touch()
    for job_id in ids:
        _wait_status(dispatcher, job_id, Status.COMPLETED)


def test_a_delayed_job_waits_until_its_time_and_a_past_run_at_runs_now(settings: Settings) -> None:
    dispatcher = _start(settings)
    delayed = _submit(dispatcher, py("pass"), delay_seconds=1.0)
    assert _job(dispatcher, delayed).status is Status.IN_QUEUE  # a worker is free, but it waits
    past = _submit(dispatcher, py("pass"), run_at="2020-01-01T00:00:00.000000Z")
    _wait_status(dispatcher, past, Status.COMPLETED)
    job = _wait_status(dispatcher, delayed, Status.COMPLETED)
    assert parse_timestamp(job.started_at) >= parse_timestamp(job.run_at)
    assert parse_timestamp(job.run_at) - parse_timestamp(job.enqueued_at) == timedelta(seconds=1)


def test_a_dependent_runs_only_after_all_its_dependencies_completed(settings: Settings, gate: Path) -> None:
    dispatcher = _start(dataclasses.replace(settings, workers=3))
    first = _submit(dispatcher, _gate(gate))
    second = _submit(dispatcher, py("pass"))
    dependent = _submit(dispatcher, py("pass"), after=(first, second))
    _wait_status(dispatcher, second, Status.COMPLETED)
    assert _job(dispatcher, dependent).status is Status.IN_QUEUE  # a free worker, but `first` still runs
    gate.touch()
    job = _wait_status(dispatcher, dependent, Status.COMPLETED)
    assert parse_timestamp(job.started_at) >= parse_timestamp(_job(dispatcher, first).completed_at)


@pytest.mark.parametrize("ending", ["fails", "is canceled"])
def test_when_a_dependency_does_not_complete_its_dependents_fail_without_running(
    settings: Settings, gate: Path, ending: str
) -> None:
    dispatcher = _start(settings)
    marker = settings.jobs_dir.parent / "ran"
    first = _submit(dispatcher, _gate(gate) if ending == "is canceled" else py("raise SystemExit(2)"))
    dependent = _submit(dispatcher, py(f"open({str(marker)!r}, 'w')"), after=(first,))
    grandchild = _submit(dispatcher, py(f"open({str(marker)!r}, 'w')"), after=(dependent,))
    if ending == "is canceled":
        dispatcher.cancel(first).get(timeout=ASK).wait(10)
    state = "CANCELED" if ending == "is canceled" else "FAILED"
    job = _wait_status(dispatcher, dependent, Status.FAILED)
    assert job.error == f"dependency {first} ended {state}; the job was not run" and job.attempts == 0
    job = _wait_status(dispatcher, grandchild, Status.FAILED)
    assert job.error == f"dependency {dependent} ended FAILED; the job was not run"
    assert not marker.exists()
    # a job submitted after its dependency already failed fails at once
    late = dispatcher.submit(JobRequest(args=("true",), after=(first,))).get(timeout=ASK)
    assert late.status is Status.FAILED and late.error.startswith(f"dependency {first} ended")
    gate.touch()


def test_queued_jobs_keep_their_places_across_a_restart(settings: Settings) -> None:
    settings = dataclasses.replace(settings, workers=1)
    log = settings.jobs_dir.parent / "order.txt"
    dispatcher = _start(settings)
    dispatcher.set_queue("default", paused=True).get(timeout=ASK)
    ids = [
        _submit(dispatcher, _append(log, name), priority=priority) for name, priority in [("a", 0), ("b", 5), ("c", 0)]
    ]
    dependent = _submit(dispatcher, _append(log, "d"), after=(ids[0],), priority=100)
    pykka.ActorRegistry.stop_all(timeout=10)
    restarted = _start(settings, jobs=load_jobs(settings, "2026-01-01T00:00:00.000000Z"))
    for job_id in [*ids, dependent]:
        _wait_status(restarted, job_id, Status.COMPLETED)
    assert log.read_text().split() == ["b", "a", "d", "c"]


def test_jobs_waiting_for_their_time_a_dependency_or_a_paused_queue_can_be_canceled(settings: Settings) -> None:
    dispatcher = _start(settings)
    dispatcher.set_queue("held", paused=True).get(timeout=ASK)
    timed = _submit(dispatcher, py("pass"), delay_seconds=0.3, queue="held")
    blocked = _submit(dispatcher, py("pass"), after=(timed,), queue="held")
    paused = _submit(dispatcher, py("pass"), queue="held")
    assert _queue(dispatcher, "held")["queued"] == 3
    for job_id in (timed, paused):
        assert dispatcher.cancel(job_id).get(timeout=ASK).wait(5)
        assert _job(dispatcher, job_id).status is Status.CANCELED
    job = _wait_status(dispatcher, blocked, Status.FAILED)  # its dependency was canceled
    assert job.error == f"dependency {timed} ended CANCELED; the job was not run"
    assert _queue(dispatcher, "held")["queued"] == 0
    run_at = parse_timestamp(_job(dispatcher, timed).run_at)
    wait_until(lambda: datetime.now(UTC) > run_at + timedelta(seconds=0.1))
    dispatcher.set_queue("held", paused=False).get(timeout=ASK)
    later = _submit(dispatcher, py("pass"), queue="held")
    _wait_status(dispatcher, later, Status.COMPLETED)
    assert _job(dispatcher, timed).status is Status.CANCELED  # its run_at passed; it stayed canceled


def test_a_queue_named_only_by_jobs_is_listed_while_it_holds_jobs(settings: Settings, gate: Path) -> None:
    dispatcher = _start(settings)
    job_id = _submit(dispatcher, _gate(gate), queue="adhoc")
    wait_until(lambda: _queue(dispatcher, "adhoc")["running"] == 1)
    assert _queue(dispatcher, "adhoc")["parallelism"] == settings.workers  # unconfigured: only --workers caps it
    gate.touch()
    _wait_status(dispatcher, job_id, Status.COMPLETED)
    names = [q["name"] for q in dispatcher.queues().get(timeout=ASK)]
    assert names == ["default"]  # configured queues (flags, PUT) stay; this one is gone
