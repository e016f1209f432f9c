"""The job object and ids: what meta.json holds, and ids that are safe as directory names."""

from __future__ import annotations

import dataclasses
import json

import pytest

from procq.actors.job import Delivery, IdGenerator, Job, Status, is_job_id
from procq.actors.transitions import interrupted


def test_ids_sort_by_creation_even_within_one_millisecond() -> None:
    new_id = IdGenerator(clock_ms=lambda: 1_700_000_000_000)
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert all(is_job_id(i) for i in ids)


def test_ids_follow_the_clock() -> None:
    clock = iter([1000, 2000])
    new_id = IdGenerator(clock_ms=lambda: next(clock))
    first, second = new_id(), new_id()
    assert first < second and int(first[:12], 16) == 1000


@pytest.mark.parametrize("bad", ["CON", "nul.txt", "a.", "A" * 32, "../" + "a" * 29, "0" * 31, "0" * 33, None, 7])
def test_job_id_validation_rejects_what_could_become_a_dangerous_path(bad: object) -> None:
    assert not is_job_id(bad)


def test_job_survives_its_json_form() -> None:
    job = Job(id="0" * 32, args=("echo", "hi"), webhook="http://x/h", webhook_delivery=Delivery(attempts=2))
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job
    assert job.to_dict()["status"] == "IN_QUEUE" and job.to_dict()["args"] == ["echo", "hi"]


def test_unknown_fields_of_a_newer_version_are_ignored() -> None:
    data = {**Job(id="0" * 32, args=("true",)).to_dict(), "priority": 5}
    assert Job.from_dict(data).args == ("true",)


@pytest.mark.parametrize(
    "broken",
    [
        {"id": "0" * 32, "args": [], "status": "IN_QUEUE"},
        {"id": "x", "args": ["a"], "status": "IN_QUEUE"},
        {"id": "0" * 32, "args": ["a"], "status": "DONE"},
        {"args": ["a"], "status": "IN_QUEUE"},
    ],
)
def test_a_foreign_or_corrupt_job_is_refused(broken: dict) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        Job.from_dict(broken)


def test_an_interrupted_job_runs_again_until_its_restart_limit() -> None:
    job = Job(id="0" * 32, args=("true",), status=Status.IN_PROGRESS, pid=42, attempts=1)
    again = interrupted(job, "interrupted by a crash of the server", restart_limit=2, now="t")
    assert (again.status, again.pid, again.interrupted) == (
        Status.IN_QUEUE,
        None,
        "interrupted by a crash of the server",
    )
    spent = interrupted(dataclasses.replace(job, attempts=2), "interrupted by a crash", restart_limit=2, now="t")
    assert spent.status is Status.FAILED and "started 2 times" in spent.error
