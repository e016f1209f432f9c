"""The Dispatcher's answers to questions (the GET routes): from memory and the store, changing nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from procq.actors.errors import JobNotFound
from procq.actors.job import Job, Status

if TYPE_CHECKING:
    from procq.actors.dispatch.catalog import Catalog
    from procq.actors.dispatch.index import JobTable
    from procq.actors.dispatch.scheduler import Scheduler
    from procq.actors.settings import Settings
    from procq.actors.store.base import Commit, Store


class Queries:
    """The part of the Dispatcher asked by API threads for what is, never for a change. A mixin: it
    reads the Dispatcher's helper objects, on the actor's thread."""

    if TYPE_CHECKING:
        _catalog: Catalog
        _table: JobTable
        _scheduler: Scheduler
        _settings: Settings
        _store: Store

    def get(self, job_id: str) -> Job:
        """The job as it is now (a finished job of an earlier run: as the store has it). Raises JobNotFound."""
        job = self._catalog.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def held(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs among `job_ids` this Dispatcher holds in memory (live, new, or of this run), as
        they are now; never reads the store (cluster mode: the API reads the rest from the database
        on its own thread, api/database.py)."""
        return {job_id: job for job_id in job_ids if (job := self._table.get(job_id)) is not None}

    def list_jobs(
        self,
        statuses: frozenset[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None = None,
        search: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of job objects (fresh dicts) newest first below the cursor `before` (ids sort by
        creation, so paging while jobs are added neither skips nor repeats one), and the next cursor or
        None; `search`: an id prefix, a tag, or words of the command. Read from the store: committed
        states, without holding every job in memory."""
        return self._catalog.page(statuses, tag, before, limit, owner, search)

    def stats(self, owner: str | None = None, counts: bool = True) -> dict[str, Any]:
        """Counts per status (of `owner`'s jobs only, if given; from the store then) and worker slots
        in use, from memory (GET /stats, /metrics). `counts=False`: without the counts (cluster mode:
        the API reads them from the database on its own thread)."""
        stats = {
            "workers": {"busy": self._scheduler.busy(), "total": self._settings.workers},
            "resources": self._scheduler.resources(),
        }
        if counts:
            stats["counts"] = self._catalog.counts(owner)
        return stats

    def resources(self, owner: str | None = None) -> dict[str, Any]:
        """The node's GPUs (each with the job on it) and counted resources (total, in use, free).
        With `owner`, jobs of other owners are shown as busy, without their ids."""
        view = self._scheduler.resources()
        if owner is not None:
            for gpu in view["gpus"]:
                if gpu["job_id"] is not None and self._table[gpu["job_id"]].owner != owner:
                    gpu["job_id"] = None
        return view

    def nodes(self) -> list[dict[str, Any]] | None:
        """The cluster's nodes (GET /nodes); None on a single machine."""
        return None

    def peer(self, name: str) -> dict[str, Any] | None:
        """Cluster mode: node `name`'s address and state (to relay a request to it); else None."""
        return None

    def kept_output(self, job_id: str, stream: str) -> Any:
        """Cluster mode: a finished job's output kept in the database (actors/cluster/outputs.Kept); else None."""
        return None

    def ping(self) -> bool:
        """Answers at once: shows the Dispatcher is alive and its inbox moving (GET /health)."""
        return True

    def trouble(self) -> str | None:
        """Why the store's last commit failed, while it has not recovered (GET /health)."""
        return self._store.trouble()

    def probe(self) -> Commit | None:
        """While the store is in trouble: a trivial commit that shows whether it has recovered."""
        return self._store.probe() if self._store.trouble() is not None else None

    def queues(self) -> list[dict[str, Any]]:
        """Every queue's settings and counts (GET /queues)."""
        return self._scheduler.views()
