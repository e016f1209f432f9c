"""The Falcon application: routes, and one JSON shape for every error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import falcon
import pykka
from procq.actors.errors import (
    IdempotencyConflict,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    QueueFull,
    ShuttingDown,
    StorageError,
)
from procq.actors.events import EventHub
from procq.actors.metrics import Metrics
from procq.api import watch
from procq.api.admin import KeysResource
from procq.api.auth import AuthMiddleware
from procq.api.commands import CommandPolicy
from procq.api.dashboard import DashboardResource
from procq.api.health import HealthResource
from procq.api.jobs import JobsResource
from procq.api.keys import KeyStore
from procq.api.queues import QueuesResource
from procq.api.resources import ResourcesResource

log = logging.getLogger("procq.api")
QUEUE_RETRY_S = 5  # Retry-After when the queue is full: long enough for some jobs to start


def create_app(
    dispatcher: Any,
    jobs_dir: Path,
    max_body_bytes: int = 1 << 20,
    cancel_wait_s: float = 30.0,
    cwd_root: Path | None = None,
    events: EventHub | None = None,
    metrics: Metrics | None = None,
    max_streams: int = 32,
    keys: KeyStore | None = None,
    commands: CommandPolicy | None = None,
) -> falcon.App:
    """The WSGI app. `dispatcher` is a DispatcherProxy; `cancel_wait_s` bounds how long PUT cancel
    waits for a job's process tree to end. `events` and `metrics` are the Dispatcher's watchers
    (fresh, unconnected ones if not given); `max_streams` bounds open SSE streams. With `keys`, API
    keys are checked (api/auth.py) once one exists, and /admin/keys manages them; `commands` limits
    what jobs may run."""
    keys = keys or KeyStore(jobs_dir / ".keys.json")  # the server's default place: off until a key exists
    app = falcon.App(middleware=[AuthMiddleware(keys, dispatcher)])
    resource = JobsResource(dispatcher, jobs_dir, max_body_bytes, cancel_wait_s, commands, cwd_root)
    app.add_route("/jobs", resource)
    for action in ("status", "result", "cancel"):
        app.add_route(f"/jobs/{{job_id}}/{action}", resource, suffix=action)
    app.add_route("/health", HealthResource(dispatcher, jobs_dir))
    app.add_route("/jobs/{job_id}/rerun", resource, suffix="rerun")
    queues = QueuesResource(dispatcher)
    app.add_route("/queues", queues)
    app.add_route("/queues/{name}", queues, suffix="queue")
    app.add_route("/resources", ResourcesResource(dispatcher))
    watch.add_routes(app, dispatcher, jobs_dir, events or EventHub(), metrics or Metrics(), max_streams)
    admin = KeysResource(keys, max_body_bytes)
    app.add_route("/admin/keys", admin)
    app.add_route("/admin/keys/{key_id}", admin, suffix="key")
    dashboard = DashboardResource()
    app.add_route("/", dashboard)
    app.add_route("/ui/{name}", dashboard, suffix="asset")

    app.add_error_handler(Exception, _internal_error)
    app.add_error_handler(JobNotFound, _raise_http(falcon.HTTPNotFound, "Unknown job"))
    app.add_error_handler(JobConflict, _raise_http(falcon.HTTPConflict, "Job is in the wrong state"))
    app.add_error_handler(InvalidRequest, _raise_http(falcon.HTTPBadRequest, "Invalid job request"))
    app.add_error_handler(IdempotencyConflict, _raise_http(falcon.HTTPConflict, "Idempotency-Key reused"))
    app.add_error_handler(StorageError, _raise_http(falcon.HTTPInternalServerError, "Storage error"))
    app.add_error_handler(ShuttingDown, _unavailable("Shutting down"))
    app.add_error_handler(QueueFull, _too_many)
    app.add_error_handler(pykka.Timeout, _unavailable("Server busy"))
    app.add_error_handler(pykka.ActorDeadError, _unavailable("Shutting down"))
    app.set_error_serializer(_json_error)
    return app


def _raise_http(error_class: type[falcon.HTTPError], title: str) -> Any:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        raise error_class(title=title, description=str(exc))

    return handle


def _unavailable(title: str) -> Any:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        description = str(exc) or "The server cannot answer right now; retry in a moment."
        raise falcon.HTTPServiceUnavailable(title=title, description=description, retry_after=1)

    return handle


def _too_many(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPTooManyRequests(title="Too many queued jobs", description=str(exc), retry_after=QUEUE_RETRY_S)


def _internal_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    if isinstance(exc, falcon.HTTPError):  # Falcon routes its own errors here too when Exception is handled
        raise exc
    log.exception("unexpected error in %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(
        title="Internal server error",
        description="procq hit an unexpected error; it is logged on the server.",
    )


def _json_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every error is JSON {title, description}, whatever the client's Accept header says."""
    body = {"title": exc.title, "description": exc.description or _default_description(req, exc)}
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body)


def _default_description(req: falcon.Request, exc: falcon.HTTPError) -> str:
    if isinstance(exc, falcon.HTTPMethodNotAllowed):
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{req.method} is not allowed on {req.path}; allowed: {allowed}."
    if exc.status == falcon.HTTP_404:
        return f"There is nothing at {req.path}. The routes are listed in GET /openapi.json."
    return exc.title
