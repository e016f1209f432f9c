"""Request bodies: their JSON Schemas (also served in the OpenAPI document) and their validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon
import jsonschema
from procq.actors import osdeps
from procq.actors.job import JobRequest, Status, timestamp
from procq.actors.supervise.spawn import resolve_cwd

MAX_ARGS = 4096
MAX_ARG_CHARS = 131072  # Linux's limit for one argument
MAX_URL_CHARS = 2048
MAX_DELAY_S = 366 * 86400  # a year: run_at/delay/timeout beyond that is almost surely a unit mistake
MAX_ENV_VARS = 128
MAX_ENV_CHARS = 32768
MAX_ENV_TOTAL = 131072  # names and values together
ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]{0,127}$"
QUEUE_NAME = "^[a-z0-9_-]{1,32}$"
WEBHOOK_EVENTS = ("start", "logs", "completed")
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
# type/subtype with optional parameters; no CR/LF, so it can never split the Content-Type header.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
MEDIA_TYPE = rf"^{_TOKEN}/{_TOKEN}( *; *{_TOKEN}=({_TOKEN}|\"[^\"\r\n\\\\]*\"))*$"

TAG: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}

SUBMIT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["args"],
    "properties": {
        "args": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ARGS,
            "items": {"type": "string", "maxLength": MAX_ARG_CHARS, "pattern": "^[^\\x00]*$"},
            "description": "The command and its arguments, run without a shell.",
            "x-message": "args must be a list of strings without NUL characters, the command first",
        },
        "mime_type": {
            "type": "string",
            "maxLength": 255,
            "pattern": MEDIA_TYPE,
            "default": "text/plain",
            "description": "Content-Type of the result (stdout.txt).",
            "x-message": "mime_type must be a media type such as 'text/plain' or 'application/json; charset=utf-8'",
        },
        "webhook": {
            "type": ["string", "null"],
            "maxLength": MAX_URL_CHARS,
            "pattern": "^https?://[^\\s/?#@]+([/?#][^\\s]*)?$",
            "description": "Absolute http(s) URL that receives the completion callback.",
            "x-message": "webhook must be an absolute http:// or https:// URL with a host, without spaces",
        },
        "tags": {
            "type": "array",
            "maxItems": 16,
            "items": TAG,
            "default": [],
            "description": "Labels to find the job by (GET /jobs?tag=...).",
            "x-message": "tags must be a list of at most 16 strings of 1 to 64 characters of A-Z a-z 0-9 _ . : -",
        },
        # README "Deciding what runs" explains each of these
        "priority": {
            "type": "integer",
            "minimum": -1000,
            "maximum": 1000,
            "default": 0,
            "description": "Higher starts first; FIFO within a priority. A waiting job gains 1 per "
            "--aging-seconds (default 60) waited, so a low priority cannot starve.",
        },
        "queue": {
            "type": "string",
            "pattern": "^[a-z0-9_-]{1,32}$",
            "default": "default",
            "description": "Named queue; each queue has its own parallelism (--queue NAME=N, PUT /queues/{name}) "
            "and can be paused. A queue not configured may run up to --workers jobs.",
            "x-message": "queue must be 1 to 32 characters of a-z, 0-9, '_' and '-'",
        },
        "run_at": {
            "type": ["string", "null"],
            "pattern": RFC3339,
            "description": "RFC 3339 time before which the job does not start, e.g. '2026-11-23T10:00:00Z'.",
            "x-message": "run_at must be an RFC 3339 time such as '2026-11-23T10:00:00Z' or "
            "'2026-11-23T11:00:00.5+01:00'",
        },
        "delay_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_DELAY_S,
            "description": "Start no earlier than this many seconds after submission (stored as run_at). "
            "Not together with run_at.",
        },
        "after": {
            "type": "array",
            "maxItems": 64,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "description": "Ids of existing jobs that must all be COMPLETED first. If one ends FAILED or "
            "CANCELED, this job ends FAILED without running.",
            "x-message": "after must list job ids (32 lowercase hex digits)",
        },
        "timeout_seconds": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_DELAY_S,
            "description": "Wall time an attempt may run; past it the process tree is ended and the attempt "
            "FAILED. Default: the server's --timeout (none unless set).",
        },
        "max_output_bytes": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Limit on stdout + stderr of an attempt; past it the tree is ended, the attempt "
            "FAILED, and the files cut to the limit. Default: the server's --max-output-bytes.",
        },
        "max_memory_bytes": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Limit on the resident memory of the whole process tree, sampled every "
            "--sample-interval seconds; past it the tree is ended and the attempt FAILED.",
        },
        "max_attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": 1,
            "description": "Attempts in all: a FAILED attempt is retried until this many have run.",
        },
        "retry_backoff_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": 3600,
            "default": 1,
            "description": "Wait before retry n is this * 2**(n-1) (at most 1 h), times a random 0.5..1.",
        },
        "env": {
            "type": "object",
            "maxProperties": MAX_ENV_VARS,
            "propertyNames": {"pattern": ENV_NAME},
            "additionalProperties": {"type": "string", "maxLength": MAX_ENV_CHARS, "pattern": "^[^\\x00]*$"},
            "description": "Extra environment variables for the command. Names are letters, digits and '_' "
            "(not starting with a digit, not PROCQ_*); values strings without NUL.",
            "x-message": "env names must be letters, digits and '_', not starting with a digit, at most 128 "
            "characters; values must be strings without NUL characters",
        },
        "cwd": {
            "type": ["string", "null"],
            "maxLength": 1024,
            "pattern": "^[^\\x00]*$",
            "description": "Working directory, relative to the server's --cwd-root (or absolute inside it); "
            "symlinks are resolved and must stay inside. Default: the job's own directory.",
            "x-message": "cwd must be a path without NUL characters",
        },
        "webhook_events": {
            "type": "array",
            "uniqueItems": True,
            "items": {"enum": list(WEBHOOK_EVENTS)},
            "default": ["completed"],
            "description": "What the webhook receives: 'start' (an attempt started), 'logs' (new stderr, at "
            "most every 500 ms), 'completed' (terminal state, retried until delivered). Only "
            "'completed' is retried; the others are sent once.",
        },
    },
}

QUEUE_UPDATE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "parallelism": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "Jobs of this queue running at once (the server's --workers still caps the total).",
        },
        "paused": {"type": "boolean", "description": "A paused queue starts nothing new; running jobs go on."},
    },
}

_submit = jsonschema.Draft202012Validator(SUBMIT)
_queue_update = jsonschema.Draft202012Validator(QUEUE_UPDATE)


def read_json(req: falcon.Request, max_body_bytes: int) -> Any:
    """The request's JSON body. 413 past max_body_bytes (declared or actual), 400 if it is not JSON."""
    if req.content_length is not None and req.content_length > max_body_bytes:
        raise _too_large(max_body_bytes)
    body = req.bounded_stream.read(max_body_bytes + 1)
    if len(body) > max_body_bytes:
        raise _too_large(max_body_bytes)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise falcon.HTTPBadRequest(
            title="Invalid JSON",
            description=f"The body must be a UTF-8 JSON object ({exc}).",
        ) from exc


def parse_submit(data: Any, cwd_root: Path | None = None) -> JobRequest:
    """Validate a POST /jobs body; raises 400 naming the first wrong field and what is allowed.
    A `cwd` is resolved against `cwd_root` here (it must exist inside it)."""
    error = jsonschema.exceptions.best_match(_submit.iter_errors(data))
    if error is not None:
        raise _invalid(_describe(error))
    args = tuple(data["args"])
    if not args[0]:
        raise _invalid("args[0] is empty: it must name the command to run")
    refusal = osdeps.command_refusal(list(args))
    if refusal:
        raise _invalid(refusal)
    webhook = data.get("webhook")
    if webhook is not None and not urlsplit(webhook).hostname:
        raise _invalid(SUBMIT["properties"]["webhook"]["x-message"])
    tags = tuple(dict.fromkeys(data.get("tags", ())))  # duplicates dropped, order kept
    return JobRequest(
        args=args,
        mime_type=data.get("mime_type", "text/plain"),
        webhook=webhook,
        tags=tags,
        **_control_fields(data, cwd_root),
    )


def _control_fields(data: dict[str, Any], cwd_root: Path | None) -> dict[str, Any]:
    """The ordering, limit and retry fields of an already schema-checked body (issue 5)."""
    if "run_at" in data and "delay_seconds" in data:
        raise _invalid("run_at and delay_seconds: give one or the other, not both")
    env = data.get("env", {})
    reserved = sorted(name for name in env if name.upper().startswith("PROCQ_"))
    if reserved:
        raise _invalid(f"env: {reserved[0]!r} is reserved: PROCQ_* variables are the server's own")
    if sum(len(name) + len(value) for name, value in env.items()) > MAX_ENV_TOTAL:
        raise _invalid(f"env: names and values together may be at most {MAX_ENV_TOTAL} characters")
    if {"start", "logs"} & set(data.get("webhook_events", ())) and not data.get("webhook"):
        raise _invalid("webhook_events: 'start' and 'logs' are sent to the webhook URL, so give a webhook too")
    fields: dict[str, Any] = {
        name: data[name]
        for name in ("priority", "queue", "timeout_seconds", "max_output_bytes", "max_memory_bytes", "max_attempts")
        if name in data
    }
    for name in ("priority", "max_attempts", "max_output_bytes", "max_memory_bytes"):
        if fields.get(name) is not None:
            fields[name] = int(fields[name])  # JSON Schema counts 2.0 as an integer
    if data.get("run_at") is not None:
        try:
            fields["run_at"] = timestamp(datetime.fromisoformat(data["run_at"].upper()).astimezone(UTC))
        except (ValueError, OverflowError) as exc:
            raise _invalid(f"run_at: {data['run_at']!r} is not a valid time ({exc})") from exc
    if "delay_seconds" in data:
        fields["delay_seconds"] = float(data["delay_seconds"])
    if "retry_backoff_seconds" in data:
        fields["retry_backoff_seconds"] = float(data["retry_backoff_seconds"])
    fields["after"] = tuple(data.get("after", ()))
    fields["env"] = tuple(sorted(env.items()))
    fields["webhook_events"] = tuple(data.get("webhook_events", ("completed",)))
    if data.get("cwd") is not None:
        try:
            fields["cwd"] = str(resolve_cwd(cwd_root, data["cwd"]))
        except ValueError as exc:
            raise _invalid(str(exc)) from exc
    return fields


def parse_queue_update(data: Any) -> dict[str, Any]:
    """Validate a PUT /queues/{name} body: {"parallelism": n, "paused": bool}, either or both."""
    error = jsonschema.exceptions.best_match(_queue_update.iter_errors(data))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        raise falcon.HTTPBadRequest(
            title="Invalid queue update",
            description=f"{path}: {error.message}"
            if path
            else f'{error.message}; the body is {{"parallelism": n, "paused": true|false}}, either field or both',
        )
    parallelism = data.get("parallelism")
    return {"parallelism": None if parallelism is None else int(parallelism), "paused": data.get("paused")}


def check_queue_name(name: str) -> None:
    if re.fullmatch(QUEUE_NAME[1:-1], name) is None:
        raise falcon.HTTPBadRequest(
            title="Invalid queue name",
            description=f"{name!r} is not a queue name: 1 to 32 characters of a-z, 0-9, '_' and '-'",
        )


def _describe(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "additionalProperties":
        allowed = ", ".join(SUBMIT["properties"])
        return f"{error.message}; the fields are: {allowed}"
    if error.validator in _SIZES and isinstance(error.instance, list | str | dict):
        unit = _SIZES[error.validator]
        return f"{path} has {len(error.instance)} {unit}; at most {error.validator_value} {unit} are allowed"
    field_schema = SUBMIT["properties"].get(str(error.absolute_path[0])) if error.absolute_path else None
    if error.validator in ("pattern", "maxItems") and field_schema:
        return f"{path}: {field_schema['x-message']}; got {_short(error.instance)}"
    if error.validator == "type" and not path:
        return 'The body must be a JSON object such as {"args": ["echo", "hi"]}'
    message = error.message.replace(repr(error.instance), _clip(repr(error.instance)))  # never echo a huge value
    return f"{path}: {message}" if path else message


_SIZES = {"maxItems": "items", "maxLength": "characters", "maxProperties": "entries"}


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _invalid(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid job request", description=description)


def _too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        title="Request body too large",
        description=f"The body may be at most {limit} bytes.",
    )


# Query parameters, by name: validated here and shown in the OpenAPI document from the same objects.
QUERY: dict[str, dict[str, Any]] = {
    "status": {
        "type": "array",
        "items": {"type": "string", "enum": [status.value for status in Status]},
        "description": "Only jobs in these states; repeat the parameter for several.",
        "x-message": "status must be one of " + ", ".join(status.value for status in Status),
    },
    "tag": {
        **TAG,
        "description": "Only jobs with this tag.",
        "x-message": "tag must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
    },
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "default": 50,
        "description": "Jobs per page.",
        "x-message": "limit must be a whole number from 1 to 500",
    },
    "cursor": {
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]{1,64}$",
        "description": "next_cursor of the previous page; opaque.",
        "x-message": "cursor must be the next_cursor of an earlier page, unchanged",
    },
    "stream": {
        "type": "string",
        "enum": ["stderr", "stdout"],
        "default": "stderr",
        "description": "Which output file to read.",
        "x-message": "stream must be stderr or stdout",
    },
    "offset": {
        "type": "integer",
        "minimum": 0,
        "default": 0,
        "description": "Byte offset to start from (Last-Event-ID takes precedence when following).",
        "x-message": "offset must be a whole number of bytes, 0 or more",
    },
    "follow": {
        "type": "boolean",
        "default": False,
        "description": "Follow the log as Server-Sent Events (like Accept: text/event-stream).",
        "x-message": "follow must be 1, true, 0 or false",
    },
}
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_QUERY_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in QUERY.items()}


def parse_query(req: falcon.Request, *names: str) -> dict[str, Any]:
    """The named query parameters, converted and checked against QUERY (defaults filled in);
    400 naming the parameter, the value and what is allowed. Unknown parameters are ignored."""
    values: dict[str, Any] = {}
    for name in names:
        schema = QUERY[name]
        raw: Any = req.get_param_as_list(name) if schema["type"] == "array" else req.get_param(name)
        if raw is None:
            if "default" in schema:
                values[name] = schema["default"]
            continue
        values[name] = value = _convert(name, schema["type"], raw)
        if not _QUERY_VALIDATORS[name].is_valid(value):
            raise _bad_query(name, raw)
    return values


def _convert(name: str, kind: str, raw: Any) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "boolean":
            return _BOOLEANS[raw.lower()]
    except (ValueError, KeyError):
        raise _bad_query(name, raw) from None
    return raw


def _bad_query(name: str, raw: Any) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(
        title="Invalid query parameter",
        description=f"{QUERY[name]['x-message']}; got {name}={_short(raw)}",
    )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
