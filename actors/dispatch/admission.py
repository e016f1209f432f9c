"""Whether a new job may be taken: the server accepts jobs, the queue has room, its dependencies exist."""

from __future__ import annotations

from collections.abc import Callable

from procq.actors.errors import InvalidRequest, QueueFull, ShuttingDown
from procq.actors.job import JobRequest


def admit(
    request: JobRequest, known: Callable[[str], bool], accepting: bool, max_queued: int | None, queued: int
) -> None:
    """Raises ShuttingDown, QueueFull (max_queued jobs wait already, `queued` counted) or InvalidRequest
    (`after` names a job that does not exist); returns if the request may become a job."""
    if not accepting:
        raise ShuttingDown()
    if max_queued is not None and queued >= max_queued:
        raise QueueFull(max_queued)
    unknown = [dependency for dependency in request.after if not known(dependency)]
    if unknown:
        raise InvalidRequest(f"after: there is no job with id {unknown[0]!r}; after lists ids of existing jobs")
