"""GET /resources: the server's GPUs, the job on each, and its counted resources in use and free."""

from __future__ import annotations

from typing import Any

import falcon
from procq.api.auth import owner_filter

ASK_TIMEOUT_S = 10.0


class ResourcesResource:
    """Runs on waitress threads; the Dispatcher's Scheduler holds the allocation and answers from memory."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # a key that sees only its own jobs sees which GPUs are busy, not whose jobs hold them
        resp.media = self._dispatcher.resources(owner_filter(req)).get(timeout=ASK_TIMEOUT_S)
