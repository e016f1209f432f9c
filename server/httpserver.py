"""The waitress server procq runs on, with its own protocol errors in procq's JSON error shape."""

from __future__ import annotations

import json
from typing import Any

import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask


class _JsonErrorTask(ErrorTask):
    """Waitress answers some requests before the app sees them (a body past max_request_body_size,
    malformed HTTP); it would send text/plain. Every error procq sends is JSON."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"title": f"{error.code} {error.reason}", "description": f"{error.reason}: {error.body}"})
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        encoded = body.encode("utf-8")
        self.content_length = len(encoded)
        self.write(encoded)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def create_server(app: Any, **adjustments: Any) -> Any:
    """waitress.create_server for one host and port, its protocol errors answered in JSON."""
    server = waitress.create_server(app, **adjustments)
    server.channel_class = _JsonErrorChannel  # read per accepted connection
    return server
