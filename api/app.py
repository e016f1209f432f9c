"""The Falcon application: the API's route table, and every error mapped once to JSON {title, description}."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon
import pykka

from procq.actors.errors import (
    CommandNotAllowed,
    IdempotencyConflict,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    KeyFileError,
    KeyNotFound,
    NotRegularFile,
    QueueFull,
    ShuttingDown,
    StorageError,
    StoreUnavailable,
    VariableNotAllowed,
)
from procq.actors.events import EventHub
from procq.actors.metrics import Metrics
from procq.api.admin import KeysResource
from procq.api.auth import AuthMiddleware
from procq.api.commands import CommandPolicy
from procq.api.crosssite import CrossSiteMiddleware
from procq.api.dashboard import DashboardResource
from procq.api.events import EventsResource
from procq.api.health import HealthResource
from procq.api.jobs import JobsResource
from procq.api.keys import KeyStore, keys_path
from procq.api.logs import LogsResource
from procq.api.openapi import OpenAPIResource
from procq.api.queues import QueuesResource
from procq.api.relay import Relay, ThisNode
from procq.api.resources import NodesResource, ResourcesResource
from procq.api.sse import StreamSlots
from procq.api.stats import MetricsResource, StatsResource

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.api")
QUEUE_RETRY_S = 5  # Retry-After when the queue is full: long enough for some jobs to start

Handler = Callable[[falcon.Request, falcon.Response, Exception, dict[str, Any]], None]


def create_app(
    dispatcher: DispatcherProxy,
    jobs_dir: Path,
    max_body_bytes: int = 1 << 20,
    cancel_wait_s: float = 30.0,
    cwd_root: Path | None = None,
    events: EventHub | None = None,
    metrics: Metrics | None = None,
    max_streams: int = 32,
    keys: KeyStore | None = None,
    commands: CommandPolicy | None = None,
    loopback_only: bool = False,
    node: ThisNode | None = None,
) -> falcon.App:
    """The WSGI app. `dispatcher` is a DispatcherProxy; `cancel_wait_s` bounds how long PUT cancel
    waits for a job's process tree to end. `events` and `metrics` are the Dispatcher's watchers
    (fresh, unconnected ones if not given); `max_streams` bounds open SSE streams. With `keys`, API
    keys are checked (api/auth.py) once one exists, and /admin/keys manages them; `commands` limits
    what jobs may run. `loopback_only` (the server listens only on loopback) refuses foreign Host headers.
    `node`: cluster mode, this node (another node's jobs' result and logs are relayed, api/relay.py)."""
    keys = keys or KeyStore(keys_path(jobs_dir, None))  # the server's default place: off until a key exists
    events = events or EventHub()
    metrics = metrics or Metrics()
    slots = StreamSlots(max_streams)  # shared by log followers and /events subscribers
    app = falcon.App(middleware=[CrossSiteMiddleware(loopback_only), AuthMiddleware(keys, dispatcher, node)])
    relay = Relay(dispatcher, node, slots) if node is not None else None

    # Jobs: submit, list, status, result, cancel, rerun, delete (api/jobs.py; the listing is api/listing.py)
    jobs = JobsResource(dispatcher, jobs_dir, max_body_bytes, cancel_wait_s, commands, cwd_root, relay)
    app.add_route("/jobs", jobs)
    app.add_route("/jobs/batch", jobs, suffix="batch")
    app.add_route("/jobs/{job_id}", jobs, suffix="job")
    app.add_route("/jobs/{job_id}/status", jobs, suffix="status")
    app.add_route("/jobs/{job_id}/result", jobs, suffix="result")
    app.add_route("/jobs/{job_id}/cancel", jobs, suffix="cancel")
    app.add_route("/jobs/{job_id}/rerun", jobs, suffix="rerun")
    # Watching: a job's output, state changes, the server's numbers and health
    app.add_route("/jobs/{job_id}/logs", LogsResource(dispatcher, jobs_dir, events, slots, relay))
    app.add_route("/events", EventsResource(events, slots))
    app.add_route("/stats", StatsResource(dispatcher, metrics))
    app.add_route("/metrics", MetricsResource(dispatcher, metrics))
    app.add_route("/health", HealthResource(dispatcher, jobs_dir))
    # Control: named queues
    queues = QueuesResource(dispatcher)
    app.add_route("/queues", queues)
    app.add_route("/queues/{name}", queues, suffix="queue")
    app.add_route("/resources", ResourcesResource(dispatcher))
    app.add_route("/nodes", NodesResource(dispatcher))
    # Admin: API keys
    admin = KeysResource(keys, max_body_bytes)
    app.add_route("/admin/keys", admin)
    app.add_route("/admin/keys/{key_id}", admin, suffix="key")
    # The API's description and the dashboard
    app.add_route("/openapi.json", OpenAPIResource())
    dashboard = DashboardResource()
    app.add_route("/", dashboard)
    app.add_route("/ui/{name}", dashboard, suffix="asset")

    # Domain errors (actors/errors.py) to HTTP, once. Falcon picks the most specific handler.
    app.add_error_handler(Exception, _internal_error)
    app.add_error_handler(JobNotFound, _answer(falcon.HTTPNotFound, "Unknown job"))
    app.add_error_handler(JobConflict, _answer(falcon.HTTPConflict, "Job is in the wrong state"))
    app.add_error_handler(InvalidRequest, _answer(falcon.HTTPBadRequest, "Invalid job request"))
    app.add_error_handler(IdempotencyConflict, _answer(falcon.HTTPConflict, "Idempotency-Key reused"))
    app.add_error_handler(CommandNotAllowed, _answer(falcon.HTTPForbidden, "Command not allowed"))
    app.add_error_handler(VariableNotAllowed, _answer(falcon.HTTPForbidden, "Environment variable not allowed"))
    app.add_error_handler(KeyNotFound, _answer(falcon.HTTPNotFound, "Unknown key"))
    app.add_error_handler(NotRegularFile, _answer(falcon.HTTPConflict, "Not a regular file"))
    app.add_error_handler(StorageError, _answer(falcon.HTTPInternalServerError, "Storage error"))
    app.add_error_handler(StoreUnavailable, _unavailable("Database unavailable"))  # cluster mode: cut off
    app.add_error_handler(KeyFileError, _answer(falcon.HTTPInternalServerError, "Keys file unusable"))
    app.add_error_handler(ShuttingDown, _unavailable("Shutting down"))
    app.add_error_handler(QueueFull, _too_many)
    app.add_error_handler(pykka.Timeout, _unavailable("Server busy"))
    app.add_error_handler(pykka.ActorDeadError, _unavailable("Shutting down"))
    app.set_error_serializer(_json_error)
    return app


def _answer(error_class: type[falcon.HTTPError], title: str) -> Handler:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        raise error_class(title=title, description=str(exc))

    return handle


def _unavailable(title: str) -> Handler:
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
    """The one error serializer: every error is JSON {title, description}, whatever the Accept header."""
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
