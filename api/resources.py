"""GET /resources: the server's GPUs, the job on each, and its counted resources in use and free; GET /nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from procq.api.ask import ask
from procq.api.auth import owner_filter

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


class ResourcesResource:
    """Runs on waitress threads; the Dispatcher's Scheduler holds the allocation and answers from memory."""

    def __init__(self, dispatcher: DispatcherProxy) -> None:
        self._dispatcher = dispatcher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # a key that sees only its own jobs sees which GPUs are busy, not whose jobs hold them
        resp.media = ask(self._dispatcher.resources(owner_filter(req)))


class NodesResource:
    """GET /nodes: the cluster's nodes, from the database (any node answers the same)."""

    def __init__(self, dispatcher: DispatcherProxy) -> None:
        self._dispatcher = dispatcher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        nodes = ask(self._dispatcher.nodes())
        if nodes is None:
            raise falcon.HTTPNotFound(
                title="Not a cluster",
                description="This server runs on one machine (started without --database-url): it has no nodes.",
            )
        resp.media = {"nodes": nodes}
