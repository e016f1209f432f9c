"""The store seam: what the Dispatcher and Supervisors ask of the store of record, whatever engine holds it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from procq.actors.job import Job, Status

# A change's receipt: resolves once the change is committed, with the number of jobs it wrote (an
# update of a job no longer in the store writes none), or fails with a StorageError.
# `commit.result(timeout)` blocks (API threads); `commit.add_done_callback(fn)` never does (actors: the
# callback runs on the writer thread, so it only sends a message). Callbacks run before nothing else
# is promised: a reply, a spawn or a webhook waits for the commit it depends on, never for a callback.
Commit = Future[int]


class Recorded(Future[int]):
    """A Commit that also waits like a threading.Event, for callers that wait on either: `wait`
    returns whether it is done; `result` then raises StorageError if it failed."""

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.exception(timeout)
        except TimeoutError:
            return False
        return True

    @classmethod
    def of(cls, commit: Commit) -> Recorded:
        recorded = cls()

        def copy(done: Commit) -> None:
            error = done.exception()
            if error is None:
                recorded.set_result(done.result())
            else:
                recorded.set_exception(error)

        commit.add_done_callback(copy)
        return recorded


@dataclass(frozen=True)
class Startup:
    """What the Dispatcher needs at start, answered by indexed queries (never by reading every job)."""

    queued: list[Job]  # IN_QUEUE, in id order (= submission order)
    running: list[Job]  # IN_PROGRESS: runs a crash (or a keeper) left behind
    owed: list[Job]  # terminal with a pending completion webhook
    counts: dict[Status, int] = field(default_factory=dict)  # every job, per status
    rewritten: int = 0  # stale meta.json files rewritten from the store
    rebuilt: bool = False  # the database was missing (or unreadable) and was rebuilt from the job directories


class Store(Protocol):
    """The store of record. Writes go through one writer that commits the changes of many callers as
    one transaction (one fsync per batch) and returns a Commit for each; reads see committed state only
    and may be called from any thread. meta.json is kept equal to the committed state by the store.

    The SQL lives in actors/store/schema.py, shared by every engine where SQL allows."""

    def create(self, jobs: Collection[Job]) -> Commit:
        """Store new jobs, all or nothing: each gets its directory and meta.json, then the commit.
        Returns at once. The Commit fails with StorageError and leaves no directory if any part fails."""
        ...

    def update(self, jobs: Collection[Job], sync_files: Collection[str] = ()) -> Commit:
        """Store new states of existing jobs (one transaction with whatever else is pending); meta.json
        follows the commit. `sync_files` (a job's outputs, before its end) are made durable first: the
        change fails if they cannot be. Returns at once."""
        ...

    def delete(self, job_ids: Collection[str]) -> Commit:
        """Forget jobs (the caller then removes their directories). Returns at once."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The committed state of one job, or None. Blocks briefly (one indexed read)."""
        ...

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The committed state of the jobs among `job_ids` that exist."""
        ...

    def with_idempotency_key(self, key_sha256: str) -> list[Job]:
        """The jobs submitted under this Idempotency-Key hash (one, or a batch), in id order."""
        ...

    def page(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        owner: str | None,
        before: str | None,
        limit: int,
    ) -> list[Job]:
        """Up to `limit` jobs newest first with ids below `before`, filtered by status, tag and owner."""
        ...

    def page_bodies(
        self,
        statuses: Collection[Status] | None,
        tag: str | None,
        owner: str | None,
        before: str | None,
        limit: int,
        search: str | None = None,
    ) -> list[tuple[str, str]]:
        """`page` as (id, the job's stored JSON) pairs: for answers that pass the JSON on as it is.
        `search`: an id prefix, a tag, or a piece of the command (any case)."""
        ...

    def counts(self, owner: str | None = None) -> dict[Status, int]:
        """Committed jobs per status: all of them, or one owner's."""
        ...

    def expired(self, completed_before: str, limit: int) -> list[Job]:
        """Up to `limit` finished jobs completed before the timestamp that owe no webhook (retention)."""
        ...

    def startup(self) -> Startup:
        """Load what the Dispatcher needs, rewriting meta.json files that lag behind the store. Blocks."""
        ...

    def probe(self) -> Commit:
        """Commit a trivial change, to learn whether the store can commit again after a trouble (it
        clears `trouble` if so). Returns at once."""
        ...

    def trouble(self) -> str | None:
        """Why the last commit failed, while no later one has succeeded (GET /health); else None."""
        ...

    def close(self) -> None:
        """Commit what is pending, stop the writer and close every connection. Blocks."""
        ...
