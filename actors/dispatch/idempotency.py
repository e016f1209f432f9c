"""Idempotency-Key replays: which job a key made in the last 24 hours, and whether a replay matches it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from procq.actors.errors import IdempotencyConflict
from procq.actors.job import Job, parse_timestamp

IDEMPOTENCY_TTL = timedelta(hours=24)


class Idempotency:
    """Key hash -> id of the job it made. A plain object: only the Dispatcher's thread touches it.
    Only hashes are kept: the client's key itself is never stored."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._made = {job.idempotency_key_sha256: job.id for job in jobs if job.idempotency_key_sha256}

    def replay(
        self, key_sha256: str, request_sha256: str, lookup: Callable[[str], Job | None], now: datetime
    ) -> Job | None:
        """The job this key made within its lifetime, or None if a new one is to be made. Raises
        IdempotencyConflict when the request body differs from the first one's."""
        original = lookup(self._made.get(key_sha256, ""))
        if original is None or now - parse_timestamp(original.enqueued_at or "") >= IDEMPOTENCY_TTL:
            return None
        if original.request_sha256 != request_sha256:
            raise IdempotencyConflict(original.id)
        return original

    def remember(self, key_sha256: str, job_id: str) -> None:
        self._made[key_sha256] = job_id

    def forget(self, job: Job) -> None:
        """The job is deleted: its key may make a new job now."""
        if job.idempotency_key_sha256 and self._made.get(job.idempotency_key_sha256) == job.id:
            del self._made[job.idempotency_key_sha256]
