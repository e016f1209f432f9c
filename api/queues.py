"""GET /queues and PUT /queues/{name}: the named queues' parallelism, pause state and counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from procq.api.ask import ask
from procq.api.parse import check_queue_name, parse_queue_update, read_json

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


class QueuesResource:
    """Runs on waitress threads; the Dispatcher owns the queues and answers from memory."""

    def __init__(self, dispatcher: DispatcherProxy) -> None:
        self._dispatcher = dispatcher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"queues": ask(self._dispatcher.queues())}

    def on_put_queue(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        check_queue_name(name)
        update = parse_queue_update(read_json(req, 64 * 1024))
        resp.media = ask(self._dispatcher.set_queue(name, update["parallelism"], update["paused"]))
