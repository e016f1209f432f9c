"""Whether a new job may be taken: the server accepts jobs, the queue has room, its dependencies exist,
and the node could ever give it what it requires."""

from __future__ import annotations

from collections.abc import Callable

from procq.actors.errors import InvalidRequest, QueueFull, ShuttingDown
from procq.actors.job import JobRequest
from procq.actors.resources.node import Node


def admit(
    request: JobRequest,
    known: Callable[[str], bool],
    accepting: bool,
    max_queued: int | None,
    queued: int,
    node: Node,
) -> None:
    """Raises ShuttingDown, QueueFull (max_queued jobs wait already, `queued` counted) or InvalidRequest
    (`after` names a job that does not exist, or `requires` asks for more than the node has in all, so
    it could never start); returns if the request may become a job."""
    if not accepting:
        raise ShuttingDown()
    if max_queued is not None and queued >= max_queued:
        raise QueueFull(max_queued)
    unknown = [dependency for dependency in request.after if not known(dependency)]
    if unknown:
        raise InvalidRequest(f"after: there is no job with id {unknown[0]!r}; after lists ids of existing jobs")
    try:
        node.check(dict(request.requires))
    except ValueError as exc:  # the description says what the node has
        raise InvalidRequest(str(exc)) from exc
