"""The Dispatcher's table of jobs: every job by id, its search index (sorted ids for paging), its watchers."""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from procq.actors.events import Watcher
from procq.actors.job import Job, Status

log = logging.getLogger("procq.dispatcher")


class JobTable:
    """Every job the server knows, by id. A plain object: only the Dispatcher's thread touches it.

    Every new job and every change of one passes through `put`: the table, the JobIndex, then the
    watchers (EventHub, Metrics, LifecycleLog), which never block; `forget` is the way out.
    """

    def __init__(self, jobs: Iterable[Job] = (), watchers: Sequence[Watcher] = ()) -> None:
        self._jobs: dict[str, Job] = {job.id: job for job in jobs}
        self._index = JobIndex(self._jobs.values())
        self._watchers = tuple(watchers)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def __getitem__(self, job_id: str) -> Job:
        return self._jobs[job_id]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def values(self) -> Iterable[Job]:
        return self._jobs.values()

    def put(self, job: Job) -> None:
        before = self._jobs.get(job.id)
        self._jobs[job.id] = job
        self._index.put(before, job)
        for watcher in self._watchers:
            try:
                watcher.job_changed(before, job)
            except Exception:  # a broken watcher must not stop the Dispatcher
                log.exception("watcher %r failed on job %s", watcher, job.id)

    def release(self, job_id: str) -> None:
        """Stop holding a job that lives on elsewhere (cluster mode: queued again in the database, for
        any node): not a deletion, so watchers hear nothing."""
        held = self._jobs.pop(job_id, None)
        if held is not None:
            self._index.remove(held)

    def forget(self, job: Job) -> None:
        del self._jobs[job.id]
        self._index.remove(job)
        for watcher in self._watchers:
            try:
                watcher.job_removed(job)
            except Exception:
                log.exception("watcher %r failed on removed job %s", watcher, job.id)

    def count(self, status: Status, owner: str | None = None) -> int:
        return self._index.count(status, owner)

    def with_status(self, *statuses: Status) -> Iterator[Job]:
        """The jobs in these states, oldest first within each (ids copied: the table may change meanwhile)."""
        return (self._jobs[i] for status in statuses for i in self._index.ids_with_status(status))

    def page(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None,
        search: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of jobs newest first below the cursor `before`, and the cursor of the next page or None."""
        ids, more = self._index.page(statuses, tag, before, limit, self._jobs, owner, search)
        return [self._jobs[i] for i in ids], (ids[-1] if more and ids else None)


class JobIndex:
    """Sorted id lists (ids sort by creation time) so a page of GET /jobs costs O(log n + page size)
    instead of a scan of every job. Owned by the Dispatcher's thread, like the jobs themselves.

    New ids are the largest yet, so adding a job is an append; a status change moves one id between
    two per-status lists (a bisect and a memmove: microseconds with 100,000 jobs).
    """

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._all: list[str] = []
        self._by_status: dict[Status, list[str]] = {status: [] for status in Status}
        self._by_tag: dict[str, list[str]] = {}
        self._owned: dict[str, Counter[Status]] = {}  # per owner (API key id): jobs per status
        for job in sorted(jobs, key=lambda job: job.id):
            self.put(None, job)

    def put(self, before: Job | None, after: Job) -> None:
        """Record a new job (`before` None) or a change of one."""
        if before is None:
            _insert(self._all, after.id)
            for tag in after.tags:
                _insert(self._by_tag.setdefault(tag, []), after.id)
        elif before.status is after.status:
            return
        else:
            _remove(self._by_status[before.status], after.id)
            if before.owner is not None:
                self._owned[before.owner][before.status] -= 1
        _insert(self._by_status[after.status], after.id)
        if after.owner is not None:
            self._owned.setdefault(after.owner, Counter())[after.status] += 1

    def remove(self, job: Job) -> None:
        _remove(self._all, job.id)
        _remove(self._by_status[job.status], job.id)
        if job.owner is not None:
            self._owned[job.owner][job.status] -= 1
        for tag in job.tags:
            ids = self._by_tag.get(tag, [])
            _remove(ids, job.id)
            if not ids:
                self._by_tag.pop(tag, None)

    def count(self, status: Status, owner: str | None = None) -> int:
        """Jobs in `status`: all of them, or those of one owner."""
        if owner is None:
            return len(self._by_status[status])
        return self._owned.get(owner, Counter())[status]

    def ids_with_status(self, status: Status) -> list[str]:
        """The ids in one state, oldest first (a copy: the caller may change the index meanwhile)."""
        return list(self._by_status[status])

    def page(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        status_of: dict[str, Job],
        owner: str | None = None,
        search: str | None = None,
    ) -> tuple[list[str], bool]:
        """Up to `limit` ids newest first, all smaller than `before` (the cursor), matching every
        filter given. Returns them and whether more follow. Walks the narrowest list that answers:
        the tag's, else the union of the chosen statuses', else all ids."""
        if tag is not None:
            source = _newest_first(self._by_tag.get(tag, []), before)
            if statuses is not None:
                source = (i for i in source if status_of[i].status in statuses)
        elif statuses is not None:
            lists = [_newest_first(self._by_status[s], before) for s in statuses]
            source = heapq.merge(*lists, reverse=True)
        else:
            source = _newest_first(self._all, before)
        if owner is not None:  # a key without admin lists only its own jobs (a scan: no per-owner list)
            source = (i for i in source if status_of[i].owner == owner)
        if search:  # a scan of what the other filters leave, newest first, until the page is full
            source = (i for i in source if _matches(status_of[i], search))
        found = list(itertools.islice(source, limit + 1))
        return found[:limit], len(found) > limit


def _matches(job: Job, search: str) -> bool:
    """An id prefix, a piece of the command line (any case), or a whole tag."""
    if job.id.startswith(search.lower()) or search in job.tags:
        return True
    return search.lower() in " ".join(job.args).lower()


def _newest_first(ids: list[str], before: str | None) -> Iterator[str]:
    end = len(ids) if before is None else bisect.bisect_left(ids, before)
    return (ids[i] for i in range(end - 1, -1, -1))


def _insert(ids: list[str], job_id: str) -> None:
    if not ids or ids[-1] < job_id:
        ids.append(job_id)  # the common case: the newest job
    else:
        position = bisect.bisect_left(ids, job_id)
        if position == len(ids) or ids[position] != job_id:
            ids.insert(position, job_id)


def _remove(ids: list[str], job_id: str) -> None:
    position = bisect.bisect_left(ids, job_id)
    if position < len(ids) and ids[position] == job_id:
        del ids[position]
