"""The waitress server procq runs on, with its own protocol errors in procq's JSON error shape."""

from __future__ import annotations

import errno
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


def starting_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The app the server is bound with until the real one is ready. Nothing reaches it (requests wait
    in the listen backlog until the loop runs); it exists so the port is bound before any job starts."""
    body = json.dumps({"title": "Starting", "description": "procq is starting; retry in a moment."}).encode()
    start_response("503 Service Unavailable", [("Content-Type", "application/json"), ("Retry-After", "1")])
    return [body]


def bind_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why procq cannot listen, and what to do."""
    in_use = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}  # Windows reports 10048
    if exc.errno in in_use or getattr(exc, "winerror", None) == 10048:
        return f"port {port} is in use; choose another with --port or PROCQ_PORT"
    if exc.errno in {errno.EACCES, getattr(errno, "WSAEACCES", errno.EACCES)}:
        return f"not allowed to listen on port {port} (ports below 1024 need privileges); choose another with --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"
