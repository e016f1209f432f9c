"""OpenAPI paths for watching jobs and the server: logs, events, stats, metrics, health; and the API's own
description and the dashboard's files."""

from __future__ import annotations

from typing import Any

from procq.api.openapi.parts import (
    BUSY,
    JSON,
    SSE,
    SSE_EVENT,
    UNKNOWN_JOB,
    error,
    json_reply,
    operation,
    path_param,
    query,
    ref,
)
from procq.api.sse import HEARTBEAT_S

_NO_SLOT = {"503": error("Every event-stream slot is taken (--max-streams).")}

PATHS: dict[str, Any] = {
    "/jobs/{job_id}/logs": {
        "parameters": [path_param("job_id")],
        "get": operation(
            "A job's output from an offset, or followed live",
            {
                "200": {
                    "description": "Plain: the bytes from `offset` (header X-Next-Offset: the size read up to). "
                    "Following (Accept: text/event-stream or ?follow=1): Server-Sent Events; each `event: log` "
                    "has `id:` the byte offset just after its chunk and `data:` the chunk as a JSON string "
                    "(chunks end on UTF-8 character boundaries); the stream ends with `event: end` whose data "
                    "is the Job. Reconnect with `Last-Event-ID` to resume exactly where it stopped.",
                    "headers": {"X-Next-Offset": {"schema": {"type": "integer"}}},
                    "content": {"text/plain": {"schema": {"type": "string"}}, SSE: {"schema": SSE_EVENT}},
                },
                "400": error("A query parameter or Last-Event-ID is invalid."),
                "409": error("The log is not a regular file (the job replaced it with a symlink): never followed."),
            }
            | {
                "503": error(
                    "Every event-stream slot is taken (--max-streams); or, in cluster mode, the job's output is "
                    "only on a node that is down or unreachable (a running job's, or a finished one's beyond "
                    "--cluster-output-cap): the description names the node."
                )
            }
            | UNKNOWN_JOB,
            parameters=[
                *query("stream", "offset", "follow"),
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
        ),
    },
    "/events": {
        "get": operation(
            "Job state changes as Server-Sent Events",
            {
                "200": {
                    "description": "`event: job` with data JobEvent on every status change; `event: deleted` with "
                    f'data {{"id"}} when a job is deleted; a comment heartbeat every {HEARTBEAT_S:.0f} s.',
                    "content": {SSE: {"schema": SSE_EVENT, "x-event-data": ref("JobEvent")}},
                },
            }
            | _NO_SLOT,
        ),
    },
    "/stats": {"get": operation("Counts, worker slots and rates", {"200": json_reply("Statistics.", "Stats")} | BUSY)},
    "/metrics": {
        "get": operation(
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
    },
    "/health": {
        "get": operation(
            "Liveness and readiness",
            {
                "200": json_reply("Ready.", "Health"),
                "503": {
                    "description": "Not ready; `checks` and `description` say why.",
                    "content": {JSON: {"schema": {"allOf": [ref("Error"), ref("Health")]}}},
                },
            },
        )
    },
    "/openapi.json": {
        "get": operation(
            "This document",
            {"200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}},
        )
    },
    "/": {
        "get": operation(
            "The web dashboard (needs no key: it asks for one and sends it with its API calls)",
            {"200": {"description": "The dashboard page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        )
    },
    "/ui/{name}": {
        "get": operation(
            "A file of the dashboard (script, stylesheet, icon)",
            {
                "200": {"description": "The file; ETag and Cache-Control: no-cache."},
                "404": error("The dashboard has no file of that name."),
            },
            parameters=[path_param("name")],
        )
    },
}
