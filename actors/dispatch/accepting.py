"""How the Dispatcher takes new jobs: one, a batch (all or nothing, one commit), a replay of an
Idempotency-Key, or a rerun of a finished job."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from procq.actors import transitions
from procq.actors.dispatch import admission
from procq.actors.dispatch.receipts import Accepted, if_failed
from procq.actors.errors import InvalidRequest, JobConflict
from procq.actors.job import Job, JobRequest, Status

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.catalog import Catalog
    from procq.actors.dispatch.dispatcher import DispatcherProxy
    from procq.actors.dispatch.idempotency import Idempotency
    from procq.actors.dispatch.index import JobTable
    from procq.actors.settings import Settings
    from procq.actors.store.base import Store


class Accepting:
    """The part of the Dispatcher that creates jobs, asked by API threads. A mixin: it works on the
    Dispatcher's state, on the actor's thread; a reply waits for the commit (`Accepted.wait`)."""

    if TYPE_CHECKING:
        _catalog: Catalog
        _table: JobTable
        _idempotency: Idempotency
        _settings: Settings
        _store: Store
        _self: DispatcherProxy
        _accepting: bool
        _new_id: Callable[[], str]
        _now: Callable[[], datetime]

        def get(self, job_id: str) -> Job: ...

        def _enqueue_or_end(self, job: Job) -> None: ...

    def submit(self, request: JobRequest) -> Job:
        """Create one job and queue it; returns at once (it runs only once it is committed). Raises
        ShuttingDown, QueueFull or InvalidRequest. A caller that answers a client uses `accept`."""
        return self._accept((request,), {}).jobs[0]

    def accept(
        self, requests: Sequence[JobRequest], key_sha256: str | None = None, request_sha256: str | None = None
    ) -> Accepted:
        """Create jobs, all or nothing, in one commit; the caller waits for it (`Accepted.wait`) before
        answering. Under an Idempotency-Key (its hash) a replay within 24 h gets the jobs the key made
        (created False). Raises IdempotencyConflict (same key, another body), ShuttingDown, QueueFull or
        InvalidRequest (naming the item `jobs[i]` of a batch)."""
        if key_sha256 is None:
            return self._accept(requests, {})
        replayed = self._idempotency.replay(
            key_sha256, request_sha256 or "", self._catalog.find, self._store.with_idempotency_key, self._now()
        )
        if replayed is not None:
            return Accepted(replayed, created=False)
        accepted = self._accept(requests, {"idempotency_key_sha256": key_sha256, "request_sha256": request_sha256})
        self._idempotency.remember(key_sha256, tuple(job.id for job in accepted.jobs))
        return accepted

    def rerun(self, job_id: str, owner: str | None = None) -> Accepted:
        """Submit a finished job's request again as a new job naming it in `rerun_of`, owned by `owner`.
        Raises JobNotFound, JobConflict (not finished yet) and whatever `accept` raises."""
        job = self.get(job_id)
        if not job.status.terminal:
            raise JobConflict(job.id, job.status.value, "rerun", "COMPLETED, FAILED or CANCELED")
        request = dataclasses.replace(transitions.rerun_request(job), owner=owner)
        return self._accept((request,), {"rerun_of": job.id})

    def _accept(self, requests: Sequence[JobRequest], extra: dict[str, Any]) -> Accepted:
        queued = self._queued() if self._settings.max_queued is not None else 0
        for index, request in enumerate(requests):
            try:
                admission.admit(
                    request,
                    self._catalog.known,
                    self._accepting,
                    self._settings.max_queued,
                    queued + index,
                    self._settings.node,
                )
            except InvalidRequest as exc:
                raise InvalidRequest(f"jobs[{index}]: {exc}" if len(requests) > 1 else str(exc)) from exc
        now = self._now()
        jobs = [transitions.new_job(self._new_id(), request, now, self._settings, **extra) for request in requests]
        return self._create(jobs)

    def _queued(self) -> int:
        """The jobs waiting to start, which --max-queued bounds."""
        return self._table.count(Status.IN_QUEUE)

    def _create(self, jobs: list[Job]) -> Accepted:
        """Commit new jobs and queue them here (cluster mode: they wait in the database instead)."""
        commit = self._store.create(jobs)
        ids = [job.id for job in jobs]
        commit.add_done_callback(functools.partial(if_failed, self._self.not_created, ids))
        for job in jobs:
            self._table.put(job)
            self._enqueue_or_end(job)
        self._self.pump.defer()  # after this reply: starting Supervisors takes a while
        return Accepted(tuple(self._table[job_id] for job_id in ids), True, commit)  # one may have failed at once
