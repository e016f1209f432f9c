"""GET /resources: the server's GPUs, the job on each, and its counted resources in use and free."""

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
