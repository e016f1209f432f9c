"""The EventHub fans changes out without ever making the Dispatcher wait for a listener."""

from __future__ import annotations

import dataclasses
import time

from procq.actors.events import EventHub
from procq.actors.job import Job, Status


def job(status: Status = Status.IN_QUEUE) -> Job:
    return Job(id="0" * 32, args=("x",), status=status)


def test_a_listener_that_falls_behind_is_dropped_and_the_others_keep_everything() -> None:
    hub = EventHub(queue_size=5)
    slow, keeping_up = hub.subscribe(), hub.subscribe()
    received = []
    began = time.monotonic()
    before = None
    for n in range(20):
        after = job(Status.IN_QUEUE if n % 2 == 0 else Status.IN_PROGRESS)
        hub.job_changed(before, after)
        before = after
        received.append(keeping_up.get(timeout=1))
    assert time.monotonic() - began < 1.0  # publishing never waited for the slow listener
    assert slow.dropped and not keeping_up.dropped
    assert [data["status"] for _, data in received] == ["IN_QUEUE", "IN_PROGRESS"] * 10
    assert [slow.get(timeout=0.01) is not None for _ in range(6)] == [True] * 5 + [False]


def test_webhook_updates_are_not_state_changes_and_ends_wake_followers() -> None:
    hub = EventHub()
    listener = hub.subscribe()
    running = job(Status.IN_PROGRESS)
    end = hub.end_of(running.id)
    done = dataclasses.replace(running, status=Status.COMPLETED, completed_at="2026-11-23T10:00:00.000000Z")
    hub.job_changed(running, done)
    hub.job_changed(done, dataclasses.replace(done, attempts=2))  # same status: no event
    assert end.is_set()
    kind, data = listener.get(timeout=1)
    assert (kind, data["status"], data["completed_at"]) == ("job", "COMPLETED", "2026-11-23T10:00:00.000000Z")
    assert listener.get(timeout=0.05) is None
    listener.close()
    hub.job_removed(done)
    assert listener.get(timeout=0.05) is None  # closed: nothing more arrives
