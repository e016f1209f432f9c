"""Submitting many jobs at once (POST /jobs/batch): Client.submit_many."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from procq.client.errors import BadRequest
from procq.client.job import Job

BATCH_SIZE = 1000  # the most jobs POST /jobs/batch takes in one request
_JOBS_INDEX = re.compile(r"jobs\[(\d+)\]")


class Batching:
    """The part of Client that submits many jobs. A mixin: it uses Client's idempotent POST."""

    if TYPE_CHECKING:

        def _post_once(self, path: str, body: dict[str, Any]) -> Any: ...

    def submit_many(self, jobs: Iterable[Sequence[str] | dict[str, Any]]) -> list[Job]:
        """Submit many jobs with one request per BATCH_SIZE (POST /jobs/batch) and return them as
        created, in order. Each item is a command (a list of strings) or a job body as POST /jobs
        takes it. A batch is all or nothing: BadRequest names the index of a wrong item (counted
        from the start of `jobs`), and neither it nor the rest of its batch is created; batches
        sent before it stay created. Each request is retried with its own Idempotency-Key."""
        bodies = [{"args": list(item)} if not isinstance(item, dict) else dict(item) for item in jobs]
        created: list[Job] = []
        for start in range(0, len(bodies), BATCH_SIZE):
            try:
                answer = self._post_once("/jobs/batch", {"jobs": bodies[start : start + BATCH_SIZE]})
            except BadRequest as exc:  # the server counts from its batch's start; we count from the caller's
                exc.description = shift_index(exc.description, start)
                exc.args = (exc.description,)
                raise
            created += [Job.from_dict(job) for job in answer["jobs"]]
        return created


def shift_index(description: str, offset: int) -> str:
    """`jobs[i]` in an error description, renumbered by `offset`."""
    return _JOBS_INDEX.sub(lambda match: f"jobs[{int(match.group(1)) + offset}]", description, count=1)
