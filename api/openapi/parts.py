"""The building blocks every part of the OpenAPI document uses: references, JSON answers, errors, parameters."""

from __future__ import annotations

from typing import Any

from procq.api import sse
from procq.api.schema import QUERY

JSON = "application/json"
SSE = sse.MEDIA_TYPE
TIME: dict[str, Any] = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "RFC 3339 in UTC, e.g. 2026-11-23T10:00:00.123456Z",
}
# In OpenAPI 3.1 the `schema` of an event stream describes one event (schemathesis checks each).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def ref(name: str) -> dict[str, Any]:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_reply(description: str, schema: str) -> dict[str, Any]:
    """A response whose body is the component schema `schema`."""
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def error(description: str) -> dict[str, Any]:
    """A 4xx/5xx response: always JSON {title, description}."""
    return json_reply(description, "Error")


DEFAULT = {"default": error("Any other error: always JSON {title, description}.")}
UNKNOWN_JOB = {"404": error("No job has this id.")}
BUSY = {
    "503": error(
        "The server is shutting down, too busy to answer in time, or (cluster mode) cut off from the database."
    )
}
TOO_LARGE = {"413": error("The body is over the limit (--max-body-bytes).")}


def operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One operation; every one documents the `default` error answer."""
    return {"summary": summary, **extra, "responses": responses | DEFAULT}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def body(schema: str) -> dict[str, Any]:
    """A required JSON request body of the component schema `schema`."""
    return {"required": True, "content": {JSON: {"schema": ref(schema)}}}


def query(*names: str) -> list[dict[str, Any]]:
    """The query parameters `names`, from the very schemas api/parse.py checks them with."""
    params = []
    for name in names:
        schema = {k: v for k, v in QUERY[name].items() if k not in ("description", "x-message")}
        param = {"name": name, "in": "query", "required": False, "schema": schema}
        param["description"] = QUERY[name]["description"]
        if schema["type"] == "array":
            param |= {"style": "form", "explode": True}
        params.append(param)
    return params
