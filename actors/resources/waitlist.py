"""Ready jobs that require GPUs or counted resources, in their queues' order, and which of them may start now."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Mapping

from procq.actors.resources.allocator import Reservations


class Waitlist:
    """Ready queued jobs with `requires`, kept per queue sorted by the Scheduler's aging key (the
    same order as its heaps). Jobs without requires never enter: nothing is reserved for them and
    they take nothing from others, so they stay on the Scheduler's fast path. A plain object: only
    its owner's thread touches it."""

    def __init__(self) -> None:
        self._queues: dict[str, list[tuple[float, str]]] = {}  # queue -> sorted (key, id)
        self._jobs: dict[str, tuple[str, float, Mapping[str, int]]] = {}  # id -> (queue, key, requires)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def add(self, queue: str, key: float, job_id: str, requires: Mapping[str, int]) -> None:
        self.discard(job_id)
        self._jobs[job_id] = (queue, key, dict(requires))
        bisect.insort(self._queues.setdefault(queue, []), (key, job_id))

    def discard(self, job_id: str) -> None:
        """Forget a job (it started, or left the queue); nothing happens if it is not here."""
        found = self._jobs.pop(job_id, None)
        if found is None:
            return
        queue, key, _ = found
        entries = self._queues[queue]
        del entries[bisect.bisect_left(entries, (key, job_id))]
        if not entries:
            del self._queues[queue]

    def pick(self, may_start: Callable[[str], bool], free: Mapping[str, int]) -> tuple[float, str, str] | None:
        """(key, job id, queue) of the first job that may start now: jobs are taken in order across
        the queues that `may_start` one (not paused, below their parallelism), and each one that
        cannot start sets aside what it needs for itself (Reservations). None if none may."""
        reservations = Reservations(free)
        for key, job_id, queue in self._in_order(may_start):
            if reservations.done:
                return None
            if reservations.admit(self._jobs[job_id][2]):
                return key, job_id, queue
        return None

    def _in_order(self, may_start: Callable[[str], bool]) -> Iterator[tuple[float, str, str]]:
        lanes = [_lane(queue, entries) for queue, entries in self._queues.items() if may_start(queue)]
        return heapq.merge(*lanes)


def _lane(queue: str, entries: list[tuple[float, str]]) -> Iterator[tuple[float, str, str]]:
    for key, job_id in entries:
        yield key, job_id, queue
