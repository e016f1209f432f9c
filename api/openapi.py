"""The OpenAPI 3.1 document of the whole HTTP API, built from the same schema objects that validate
requests (api/schema.py), and GET /openapi.json that serves it."""

from __future__ import annotations

import copy
import json
from typing import Any

import falcon
from procq.actors.events import EVENT_FIELDS
from procq.actors.job import Status
from procq.api import control_openapi
from procq.api.openapi_security import add_security
from procq.api.schema import QUERY, SUBMIT

_STATUS = {"type": "string", "enum": [status.value for status in Status]}
_TIME = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "RFC 3339 in UTC, e.g. 2026-11-23T10:00:00.123456Z",
}
_JSON = "application/json"

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["title", "description"],
        "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
    },
    "SubmitRequest": SUBMIT,
    "Delivery": {
        "type": "object",
        "required": ["state", "attempts"],
        "properties": {
            "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": _TIME,
            "delivered_at": _TIME,
        },
    },
    "Job": {
        "type": "object",
        "description": "A job. More fields may appear; clients ignore fields they do not know.",
        "required": ["id", "args", "mime_type", "webhook", "status", "pid", "exit_code", "error", "attempts"]
        + ["enqueued_at", "started_at", "completed_at", "tags"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "args": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "mime_type": {"type": "string"},
            "webhook": {"type": ["string", "null"]},
            "status": _STATUS,
            "pid": {"type": ["integer", "null"]},
            "pid_started_at": {"type": ["number", "null"]},
            "exit_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "attempts": {"type": "integer", "minimum": 0},
            "enqueued_at": _TIME,
            "started_at": _TIME,
            "completed_at": _TIME,
            "interrupted": {"type": ["string", "null"]},
            "webhook_delivery": {"oneOf": [{"$ref": "#/components/schemas/Delivery"}, {"type": "null"}]},
            "tags": SUBMIT["properties"]["tags"],
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as ?cursor= for the next page."},
        },
    },
    "JobEvent": {
        "type": "object",
        "description": "The data of an `event: job` on GET /events.",
        "required": list(EVENT_FIELDS),
        "properties": {"id": {"type": "string"}, "status": _STATUS}
        | {name: _TIME for name in EVENT_FIELDS if name.endswith("_at")},
    },
    "Stats": {
        "type": "object",
        "required": ["counts", "workers", "submitted_per_s", "completed_per_s"],
        "properties": {
            "counts": {
                "type": "object",
                "required": [status.value for status in Status],
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "workers": {
                "type": "object",
                "required": ["busy", "total"],
                "properties": {"busy": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "submitted_per_s": {"type": "number", "minimum": 0, "description": "Over the last minute."},
            "completed_per_s": {"type": "number", "minimum": 0, "description": "Over the last minute."},
            "history": {
                "type": "object",
                "description": "Jobs submitted and finished (server-wide) per interval_s seconds over the "
                "last 10 minutes, oldest first; the last interval is the current one.",
                "properties": {
                    "interval_s": {"type": "integer"},
                    "submitted": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "completed": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                },
            },
        },
        "description": "With a key that is not admin, counts are that key's own jobs.",
    },
    "Health": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {
                "type": "object",
                "description": "Each check's result: 'ok' or what is wrong.",
                "additionalProperties": {"type": "string"},
            },
        },
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, "Error")


def _query(*names: str) -> list[dict[str, Any]]:
    params = []
    for name in names:
        schema = {k: v for k, v in QUERY[name].items() if k not in ("description", "x-message")}
        param = {"name": name, "in": "query", "required": False, "schema": schema}
        param["description"] = QUERY[name]["description"]
        if schema["type"] == "array":
            param |= {"style": "form", "explode": True}
        params.append(param)
    return params


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SSE = "text/event-stream"
# In OpenAPI 3.1 the `schema` of an event stream describes one event (schemathesis checks each).
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
_DEFAULT = {"default": _error("Any other error: always JSON {title, description}.")}
_UNKNOWN = {"404": _error("No job has this id.")}
_BUSY = {"503": _error("The server is shutting down or too busy to answer in time.")}


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, **extra, "responses": responses | _DEFAULT}


PATHS: dict[str, Any] = {
    "/jobs": {
        "post": _operation(
            "Submit a job",
            {
                "201": {**_json("The new job.", "Job"), "headers": {"Location": {"schema": {"type": "string"}}}},
                "400": _error("The body is not a valid job request; the description names the field."),
                "413": _error("The body is over the limit (--max-body-bytes)."),
            }
            | _BUSY,
            requestBody={"required": True, "content": {_JSON: {"schema": _ref("SubmitRequest")}}},
        ),
        "get": _operation(
            "List jobs, newest first",
            {"200": _json("A page of jobs.", "JobList"), "400": _error("A query parameter is invalid.")},
            parameters=_query("status", "tag", "q", "limit", "cursor"),
        ),
    },
    "/jobs/{job_id}": {
        "parameters": [_JOB_ID],
        "get": _operation("A job (the same as /jobs/{job_id}/status)", {"200": _json("The job.", "Job")} | _UNKNOWN),
        "delete": _operation(
            "Delete a finished job and its files",
            {"204": {"description": "Deleted."}}
            | _UNKNOWN
            | {"409": _error("The job is queued, running or delivering its webhook.")},
        ),
    },
    "/jobs/{job_id}/status": {
        "parameters": [_JOB_ID],
        "get": _operation("A job's state", {"200": _json("The job.", "Job")} | _UNKNOWN),
    },
    "/jobs/{job_id}/result": {
        "parameters": [_JOB_ID],
        "get": _operation(
            "A completed job's stdout",
            {
                "200": {
                    "description": "The exact bytes of stdout.txt, with the job's mime_type as Content-Type.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "409": _error("The job is not COMPLETED; the description names its state."),
            }
            | _UNKNOWN,
        ),
    },
    "/jobs/{job_id}/cancel": {
        "parameters": [_JOB_ID],
        "put": _operation(
            "Cancel a queued or running job (waits until its processes are gone)",
            {"200": _json("The job, now CANCELED.", "Job"), "409": _error("The job has already finished.")}
            | _UNKNOWN
            | _BUSY,
        ),
    },
    "/jobs/{job_id}/logs": {
        "parameters": [_JOB_ID],
        "get": _operation(
            "A job's output from an offset, or followed live",
            {
                "200": {
                    "description": "Plain: the bytes from `offset` (header X-Next-Offset: the size read up to). "
                    "Following (Accept: text/event-stream or ?follow=1): Server-Sent Events; each `event: log` "
                    "has `id:` the byte offset just after its chunk and `data:` the chunk as a JSON string "
                    "(chunks end on UTF-8 character boundaries); the stream ends with `event: end` whose data "
                    "is the Job. Reconnect with `Last-Event-ID` to resume exactly where it stopped.",
                    "headers": {"X-Next-Offset": {"schema": {"type": "integer"}}},
                    "content": {"text/plain": {"schema": {"type": "string"}}, _SSE: {"schema": _SSE_EVENT}},
                },
                "400": _error("A query parameter or Last-Event-ID is invalid."),
                "503": _error("Every event-stream slot is taken (--max-streams)."),
            }
            | _UNKNOWN,
            parameters=[
                *_query("stream", "offset", "follow"),
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
        ),
    },
    "/events": {
        "get": _operation(
            "Job state changes as Server-Sent Events",
            {
                "200": {
                    "description": "`event: job` with data JobEvent on every status change; `event: deleted` with "
                    'data {"id"} when a job is deleted; a comment heartbeat every 15 s.',
                    "content": {_SSE: {"schema": _SSE_EVENT, "x-event-data": _ref("JobEvent")}},
                },
                "503": _error("Every event-stream slot is taken (--max-streams)."),
            },
        ),
    },
    "/stats": {"get": _operation("Counts, worker slots and rates", {"200": _json("Statistics.", "Stats")} | _BUSY)},
    "/metrics": {
        "get": _operation(
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
        "get": _operation(
            "Liveness and readiness",
            {
                "200": _json("Ready.", "Health"),
                "503": {
                    "description": "Not ready; `checks` and `description` say why.",
                    "content": {_JSON: {"schema": {"allOf": [_ref("Error"), _ref("Health")]}}},
                },
            },
        )
    },
    "/openapi.json": {
        "get": _operation(
            "This document",
            {"200": {"description": "OpenAPI 3.1.", "content": {_JSON: {"schema": {"type": "object"}}}}},
        )
    },
    "/": {  # api/dashboard.py
        "get": _operation(
            "The web dashboard (needs no key: it asks for one and sends it with its API calls)",
            {"200": {"description": "The dashboard page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        )
    },
    "/ui/{name}": {
        "get": _operation(
            "A file of the dashboard (script, stylesheet, icon)",
            {
                "200": {"description": "The file; ETag and Cache-Control: no-cache."},
                "404": _error("The dashboard has no file of that name."),
            },
            parameters=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        )
    },
}


def _add_control() -> None:
    """Issue 5's pieces (api/control_openapi.py): job fields, runs, queues, rerun, Idempotency-Key."""
    SCHEMAS["Job"]["properties"].update(control_openapi.JOB_FIELDS)
    SCHEMAS.update(control_openapi.SCHEMAS)
    PATHS.update(control_openapi.PATHS)
    submit = PATHS["/jobs"]["post"]
    submit["responses"].update(control_openapi.SUBMIT_RESPONSES)
    submit.setdefault("parameters", []).append(control_openapi.IDEMPOTENCY_KEY)


_add_control()


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy: callers may change it)."""
    doc = copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "procq",
                "version": "1",
                "description": "A job server that runs every job as its own OS process.",
            },
            "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
            "paths": PATHS,
            "components": {"schemas": SCHEMAS},
        }
    )
    return add_security(doc)  # api/openapi_security.py: Bearer keys, scopes, /admin/keys


class OpenAPIResource:
    def __init__(self) -> None:
        self._body = json.dumps(document(), indent=1).encode("utf-8")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body
