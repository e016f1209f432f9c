"""Idempotency-Key replays: which jobs a key made in the last 24 hours, and whether a replay matches them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from procq.actors.errors import IdempotencyConflict
from procq.actors.job import Job, parse_timestamp

IDEMPOTENCY_TTL = timedelta(hours=24)


class Idempotency:
    """Key hash -> ids of the jobs it made (one, or a batch) in this run; keys of earlier runs are
    looked up in the store. A plain object: only the Dispatcher's thread touches it. Only hashes are
    kept: the client's key itself is never stored."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._made: dict[str, tuple[str, ...]] = {}
        for job in sorted(jobs, key=lambda job: job.id):
            if job.idempotency_key_sha256:
                self._made[job.idempotency_key_sha256] = (*self._made.get(job.idempotency_key_sha256, ()), job.id)

    def replay(
        self,
        key_sha256: str,
        request_sha256: str,
        lookup: Callable[[str], Job | None],
        stored: Callable[[str], list[Job]],
        now: datetime,
    ) -> tuple[Job, ...] | None:
        """The jobs this key made within its lifetime, or None if new ones are to be made. Raises
        IdempotencyConflict when the request body differs from the first one's."""
        ids = self._made.get(key_sha256)
        found = [job for job in map(lookup, ids) if job is not None] if ids else stored(key_sha256)
        if not found or now - parse_timestamp(found[0].enqueued_at or "") >= IDEMPOTENCY_TTL:
            return None
        if found[0].request_sha256 != request_sha256:
            raise IdempotencyConflict(found[0].id)
        return tuple(found)

    def remember(self, key_sha256: str, job_ids: tuple[str, ...]) -> None:
        self._made[key_sha256] = job_ids

    def forget(self, job: Job) -> None:
        """The job is deleted: its key may make new jobs now."""
        key = job.idempotency_key_sha256
        if key and job.id in self._made.get(key, ()):
            del self._made[key]
