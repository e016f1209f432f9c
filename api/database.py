"""Cluster mode: the questions only the database can answer, read on the API's thread from the store's
read pool, never on the Dispatcher's. With the database away, such a read waits until it fails (seconds,
then a 503); on the Dispatcher's thread it stalled every local job's messages meanwhile."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from procq.actors.cluster import nodes as cluster_nodes
from procq.actors.cluster import queues as cluster_queues
from procq.actors.dispatch.catalog import shape_page
from procq.actors.errors import JobNotFound
from procq.actors.job import Job, Status
from procq.api.ask import ask

if TYPE_CHECKING:
    from procq.actors.cluster.outputs import Kept
    from procq.actors.dispatch.dispatcher import DispatcherProxy
    from procq.actors.store.postgres import PostgresStore

T = TypeVar("T")


class Answered(Generic[T]):
    """An answer already read, in the shape of the Dispatcher's futures (`ask` calls `get`)."""

    def __init__(self, value: T) -> None:
        self._value = value

    def get(self, timeout: float | None = None) -> T:
        return self._value


class DatabaseAnswers:
    """Stands in for the Dispatcher's proxy in the API of a cluster node: the questions below are
    answered here, from memory through the Dispatcher (it never reads the database for them) and
    from the database on the calling thread; every other attribute is the Dispatcher's own."""

    def __init__(self, dispatcher: DispatcherProxy, store: PostgresStore) -> None:
        self._dispatcher = dispatcher
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dispatcher, name)

    def get(self, job_id: str) -> Answered[Job]:
        """The job as this node holds it now, else as the database has it; JobNotFound."""
        job = ask(self._dispatcher.held([job_id])).get(job_id) or self._store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return Answered(job)

    def list_jobs(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        before: str | None,
        limit: int,
        owner: str | None = None,
        search: str | None = None,
    ) -> Answered[tuple[list[dict[str, Any]], str | None]]:
        found = self._store.page_bodies(statuses, tag, owner, before, limit + 1, search)
        held = ask(self._dispatcher.held([job_id for job_id, _ in found[:limit]]))
        return Answered(shape_page(found, held, limit))

    def stats(self, owner: str | None = None) -> Answered[dict[str, Any]]:
        stats = ask(self._dispatcher.stats(owner, counts=False))
        stats["counts"] = {status.value: n for status, n in self._store.counts(owner).items()}  # every node's
        return Answered(stats)

    def queues(self) -> Answered[list[dict[str, Any]]]:
        with self._store.connection() as conn:
            return Answered(cluster_queues.views(conn))

    def nodes(self) -> Answered[list[dict[str, Any]]]:
        with self._store.connection() as conn:
            return Answered(cluster_nodes.view(conn))

    def peer(self, name: str) -> Answered[dict[str, Any] | None]:
        with self._store.connection() as conn:
            return Answered(cluster_nodes.peer(conn, name))

    def kept_output(self, job_id: str, stream: str) -> Answered[Kept | None]:
        return Answered(self._store.kept_output(job_id, stream))
