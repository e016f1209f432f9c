"""When completion webhooks go out: the deliveries owed, by due time, and the few in flight."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from procq.actors.job import Job
from procq.actors.transitions import owes_delivery


class Deliveries:
    """The Dispatcher's schedule of completion webhooks. A plain object: only its thread touches it.

    A job owing a delivery waits in a heap by its next attempt's time (a pending one survives a
    restart: its time is in meta.json). At most `concurrency` attempts are in flight, so a dead
    receiver cannot pile up threads; each attempt is one Supervisor's errand, and the Supervisor's
    answer (`delivery_ended`) brings the job back here if it is to be retried.
    """

    def __init__(self, jobs: Iterable[Job], concurrency: int) -> None:
        self._concurrency = concurrency
        self._due = [(job.webhook_delivery.next_attempt_at or "", job.id) for job in jobs if owes_delivery(job)]  # type: ignore[union-attr]
        heapq.heapify(self._due)
        self._in_flight: set[str] = set()

    def __contains__(self, job_id: str) -> bool:
        """True while an attempt for this job is in flight (its Supervisor owns the job's files)."""
        return job_id in self._in_flight

    def owe(self, job: Job) -> None:
        """Schedule the job's next attempt if it owes one."""
        if owes_delivery(job):
            heapq.heappush(self._due, (job.webhook_delivery.next_attempt_at or "", job.id))  # type: ignore[union-attr]

    def ended(self, job_id: str) -> None:
        """An attempt is over (the job comes back through `owe` if another is due)."""
        self._in_flight.discard(job_id)

    def forget(self, job_id: str) -> None:
        if any(entry_id == job_id for _, entry_id in self._due):
            self._due = [entry for entry in self._due if entry[1] != job_id]
            heapq.heapify(self._due)

    def take_due(self, now: str) -> tuple[list[str], str | None]:
        """The jobs whose attempt may start now (counted in flight), and when the next one falls due
        if a slot is still free for it (for the Dispatcher's timer), else None."""
        started: list[str] = []
        while self._due and len(self._in_flight) < self._concurrency:
            due, job_id = self._due[0]
            if due > now:
                return started, due
            heapq.heappop(self._due)
            self._in_flight.add(job_id)
            started.append(job_id)
        return started, None
