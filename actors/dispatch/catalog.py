"""Every job the Dispatcher answers for: in memory while it is live or new, in the store once it is old."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from procq.actors.dispatch.index import JobTable
from procq.actors.job import Job, Status
from procq.actors.store.base import Store


class Catalog:
    """The JobTable (queued, running, owing a webhook, and every job of this run) in front of the store,
    which alone holds the finished jobs of earlier runs: a million of them cost no memory, and are
    counted here from the store's counts at start. A plain object: only the Dispatcher's thread."""

    def __init__(self, table: JobTable, store: Store, counts: Mapping[Status, int] | None) -> None:
        self._table = table
        self._store = store
        live = Counter(job.status for job in table.values())
        self._cold = Counter({status: max(0, n - live[status]) for status, n in (counts or {}).items()})

    def find(self, job_id: str) -> Job | None:
        """The job as it is now: the table's, else the store's committed state (StorageError if unreadable)."""
        return self._table.get(job_id) or self._store.get(job_id)

    def known(self, job_id: str) -> bool:
        return job_id in self._table or self._store.get(job_id) is not None

    def status_of(self, job_id: str) -> Status | None:
        job = self.find(job_id)
        return None if job is None else job.status

    def page(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None,
        search: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page newest first below the cursor `before` as job objects (JSON-ready dicts), and the next
        cursor or None: committed states from the store, parsed as they are (no Job is built for a
        page of old jobs), or the table's newer state of a job it holds."""
        found = self._store.page_bodies(statuses, tag, owner, before, limit + 1, search)
        return shape_page(found, self._table, limit)

    def counts(self, owner: str | None = None) -> dict[str, int]:
        """Jobs per status: every job, or (from the store's committed states) one owner's."""
        if owner is not None:
            return {status.value: n for status, n in self._store.counts(owner).items()}
        return {status.value: self._table.count(status) + self._cold[status] for status in Status}

    def forget(self, job: Job) -> None:
        """A job is deleted (its deletion committed)."""
        if job.id in self._table:
            self._table.forget(self._table[job.id])
        else:
            self._cold[job.status] = max(0, self._cold[job.status] - 1)


def shape_page(
    found: list[tuple[str, Any]], live: Mapping[str, Job] | JobTable, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the store's (id, stored JSON) rows, at most `limit` of one more read, as job objects:
    the newer state of a job held in `live`, else the stored one; and the next cursor or None."""
    page = [
        job.to_dict() if (job := live.get(job_id)) is not None else orjson.loads(body) for job_id, body in found[:limit]
    ]
    return page, (found[limit - 1][0] if len(found) > limit and page else None)
