"""What may start next: named queues with their own parallelism, priority with aging, run_at, dependencies."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from procq.actors.job import DEFAULT_QUEUE, Job, Status, parse_timestamp
from procq.actors.resources.allocator import Allocator, Assignment
from procq.actors.resources.node import Node
from procq.actors.resources.waitlist import Waitlist

log = logging.getLogger("procq.scheduler")


@dataclass(slots=True)
class _Queue:
    parallelism: int
    paused: bool = False
    ready: list[tuple[float, str]] = field(default_factory=list)  # (aging key, id) heap; stale ids are skipped
    members: set[str] = field(default_factory=set)  # every IN_QUEUE job of this queue (ready, timed, blocked)
    running: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Entry:
    queue: str
    key: float  # ready time - priority * aging_s: smaller starts first
    run_at_s: float
    requires: dict[str, int]  # the job's own (never mutated); empty for most jobs


class Scheduler:
    """The Dispatcher's plan of queued jobs. A plain object: only the Dispatcher's thread touches it.

    Ordering rule (aging): a job's effective priority is `priority + waited / aging_s`, where `waited`
    counts from its submission or its run_at, whichever is later. Comparing two jobs at any moment
    gives the same answer as comparing `ready_time - priority * aging_s`, which does not change while
    they wait, so each job is scored once when it becomes ready and sits in a heap: starting a job is
    O(queues + log n), never a rescan of the queue. Ties go to the smaller id (= the older job).

    A job is in one of three places until it starts: blocked on unfinished dependencies (`after`),
    timed (its run_at is in the future), or ready in its queue's heap. A queue starts jobs while it
    is not paused and runs fewer than its parallelism, and no job starts while every one of the
    `workers` slots is taken.

    GPUs and counted resources: a ready job with `requires` waits in the Waitlist instead of its
    queue's heap, and starts only once the Allocator has what it needs, under the reservation rule
    (actors/resources/allocator.py: no job takes what a waiting job ahead of it needs). Jobs without
    requires keep the heap's fast path.
    """

    def __init__(
        self,
        default_parallelism: int,
        aging_s: float,
        queues: tuple[tuple[str, int], ...] = (),
        node: Node | None = None,
    ) -> None:
        self._workers = default_parallelism  # the global limit: a queue's default parallelism is all of it
        self._default_parallelism = default_parallelism
        self._aging_s = aging_s
        self._queues: dict[str, _Queue] = {DEFAULT_QUEUE: _Queue(default_parallelism)}
        for name, parallelism in queues:
            self._queues[name] = _Queue(parallelism)
        # queues named by flags or PUT stay listed; others exist only while they hold jobs, so
        # clients naming many queues cannot make next_to_start (O(queues)) slow for long
        self._configured = set(self._queues)
        self._entries: dict[str, _Entry] = {}  # every IN_QUEUE job the scheduler holds
        self._timed: list[tuple[float, str]] = []  # (run_at, id) heap of jobs not yet due
        self._blocked: dict[str, set[str]] = {}  # dependent id -> dependencies not yet COMPLETED
        self._dependents: dict[str, set[str]] = {}  # dependency id -> ids blocked on it
        self._running: dict[str, str] = {}  # id -> queue of jobs started and not yet ended
        self._allocator = Allocator(node or Node())  # who holds which GPUs and units
        self._waitlist = Waitlist()  # ready jobs with requires, in order

    # --- jobs coming and going -------------------------------------------------------------------

    def add(self, job: Job, now_s: float, status_of: Callable[[str], Status | None]) -> str | None:
        """Take an IN_QUEUE job. Returns why it can never run (a dependency failed, was canceled or
        is gone, or it requires more than this node has) without taking it, else None."""
        if job.requires:
            try:
                self._allocator.node.check(job.requires)
            except ValueError as exc:  # the node was declared smaller since the job was accepted
                return f"{exc}; the job was not run"
        pending = set()
        for dependency in job.after:
            status = status_of(dependency)
            if status is None:
                return f"dependency {dependency} does not exist; the job was not run"
            if status in (Status.FAILED, Status.CANCELED):
                return f"dependency {dependency} ended {status.value}; the job was not run"
            if status is not Status.COMPLETED:
                pending.add(dependency)
        enqueued_s = parse_timestamp(job.enqueued_at).timestamp() if job.enqueued_at else now_s
        run_at_s = parse_timestamp(job.run_at).timestamp() if job.run_at else 0.0
        key = max(enqueued_s, run_at_s) - job.priority * self._aging_s
        self._entries[job.id] = _Entry(job.queue, key, run_at_s, job.requires)
        self._queue(job.queue).members.add(job.id)
        if pending:
            self._blocked[job.id] = pending
            for dependency in pending:
                self._dependents.setdefault(dependency, set()).add(job.id)
        else:
            self._place(job.id, now_s)
        return None

    def remove(self, job_id: str) -> None:
        """Forget a queued job (canceled, or failed without running). Its heap entries go stale."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        self._queues[entry.queue].members.discard(job_id)
        self._waitlist.discard(job_id)
        for dependency in self._blocked.pop(job_id, ()):
            self._dependents.get(dependency, set()).discard(job_id)
        self._prune(entry.queue)

    def has_dependents(self, job_id: str) -> bool:
        """True while queued jobs wait for this one to end."""
        return bool(self._dependents.get(job_id))

    def adopt(self, job: Job) -> None:
        """Count a job found running at start (re-adopted) in its queue's slots, holding again what it
        was given (its GPUs keep running it)."""
        if job.assigned:
            why = self._allocator.hold(job.id, Assignment.from_dict(job.assigned))
            if why is not None:
                log.warning("job %s: re-adopted, but %s", job.id, why)
        self._queue(job.queue).running.add(job.id)
        self._running[job.id] = job.queue

    def start_claimed(self, job: Job) -> Assignment | None:
        """Count a job claimed from the cluster's queue in its queue's slots and give it what it
        requires (concrete GPUs): None if that is not free here after all (the claim read `free()`)."""
        assignment = self._allocator.take(job.id, dict(job.requires)) if job.requires else Assignment()
        if assignment is not None:
            self._queue(job.queue).running.add(job.id)
            self._running[job.id] = job.queue
        return assignment

    def free(self) -> dict[str, int]:
        """Free units of every resource the node has (GPUs counted)."""
        return self._allocator.free()

    def ended(self, job_id: str) -> None:
        """A started job's run is over, however it ended: what it held is free again (it may come
        back with `add` for a retry)."""
        self._allocator.release(job_id)
        queue = self._running.pop(job_id, None)
        if queue is not None:
            self._queues[queue].running.discard(job_id)
            self._prune(queue)

    def dependency_ended(self, job: Job, now_s: float) -> list[tuple[str, str]]:
        """`job` reached a terminal state: unblock its dependents, or return those that can never run
        now, each with the reason (the caller fails them, which may cascade)."""
        doomed = []
        for dependent in sorted(self._dependents.pop(job.id, ())):
            if dependent not in self._entries:
                continue
            if job.status is not Status.COMPLETED:
                doomed.append((dependent, f"dependency {job.id} ended {job.status.value}; the job was not run"))
                self.remove(dependent)
                continue
            pending = self._blocked.get(dependent, set())
            pending.discard(job.id)
            if not pending:
                self._blocked.pop(dependent, None)
                self._place(dependent, now_s)
        return doomed

    # --- choosing what starts --------------------------------------------------------------------

    def release_due(self, now_s: float) -> float | None:
        """Make timed jobs whose run_at has come ready. Returns the next run_at still ahead, if any."""
        while self._timed and self._timed[0][0] <= now_s:
            _, job_id = heapq.heappop(self._timed)
            entry = self._entries.get(job_id)
            if entry is not None and entry.run_at_s <= now_s and job_id not in self._blocked:
                self._ready(job_id, entry)
        while self._timed and self._timed[0][1] not in self._entries:
            heapq.heappop(self._timed)  # canceled while it waited
        return self._timed[0][0] if self._timed else None

    def busy(self) -> int:
        """Worker slots taken: jobs started and not yet ended."""
        return len(self._running)

    def running_ids(self) -> list[str]:
        """The jobs holding worker slots."""
        return list(self._running)

    def next_to_start(self) -> str | None:
        """Take the best ready job among the queues that may start one now, and count it running;
        None when nothing may start (no worker slot free, or no queue with a ready job and room).
        A job with requires is given its GPUs and units here (see `assignment`)."""
        if len(self._running) >= self._workers:
            return None
        best: tuple[float, str, str] | None = None
        for name, queue in self._queues.items():
            if queue.paused or len(queue.running) >= queue.parallelism:
                continue
            while queue.ready and queue.ready[0][1] not in self._entries:
                heapq.heappop(queue.ready)  # canceled or failed while it waited
            if queue.ready and (best is None or queue.ready[0] < best[:2]):
                best = (*queue.ready[0], name)
        waiting = self._waitlist.pick(self._may_start, self._allocator.free()) if self._waitlist else None
        if waiting is not None and (best is None or waiting[:2] < best[:2]):
            _, job_id, name = waiting
            self._waitlist.discard(job_id)
            self._allocator.take(job_id, self._entries[job_id].requires)
        elif best is not None:
            _, job_id, name = best
            heapq.heappop(self._queues[name].ready)
        else:
            return None
        queue = self._queues[name]
        del self._entries[job_id]
        queue.members.discard(job_id)
        queue.running.add(job_id)
        self._running[job_id] = name
        return job_id

    def assignment(self, job_id: str) -> Assignment | None:
        """What a started job holds (its GPUs and units), or None if it required nothing."""
        return self._allocator.holding(job_id)

    def resources(self) -> dict[str, Any]:
        """Each GPU with the job on it, each counted resource's total, in use and free (a new dict)."""
        return self._allocator.view()

    # --- queue settings --------------------------------------------------------------------------

    def configure(self, name: str, parallelism: int | None = None, paused: bool | None = None) -> dict[str, object]:
        """Change a queue (creating it if new) and return its view."""
        queue = self._queue(name)
        self._configured.add(name)
        if parallelism is not None:
            queue.parallelism = parallelism
        if paused is not None:
            queue.paused = paused
        return self._view(name, queue)

    def queued(self) -> int:
        """How many IN_QUEUE jobs the scheduler holds (waiting ones included). O(1)."""
        return len(self._entries)

    def views(self) -> list[dict[str, object]]:
        return [self._view(name, self._queues[name]) for name in sorted(self._queues)]

    # --- inside ----------------------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        if name not in self._queues:
            self._queues[name] = _Queue(self._default_parallelism)
        return self._queues[name]

    def _prune(self, name: str) -> None:
        queue = self._queues[name]
        if name not in self._configured and not queue.members and not queue.running:
            del self._queues[name]

    def _place(self, job_id: str, now_s: float) -> None:
        entry = self._entries[job_id]
        if entry.run_at_s > now_s:
            heapq.heappush(self._timed, (entry.run_at_s, job_id))
        else:
            self._ready(job_id, entry)

    def _ready(self, job_id: str, entry: _Entry) -> None:
        if entry.requires:
            self._waitlist.add(entry.queue, entry.key, job_id, entry.requires)
        else:
            heapq.heappush(self._queues[entry.queue].ready, (entry.key, job_id))

    def _may_start(self, name: str) -> bool:
        queue = self._queues[name]
        return not queue.paused and len(queue.running) < queue.parallelism

    @staticmethod
    def _view(name: str, queue: _Queue) -> dict[str, object]:
        return {
            "name": name,
            "parallelism": queue.parallelism,
            "paused": queue.paused,
            "queued": len(queue.members),
            "running": len(queue.running),
        }
