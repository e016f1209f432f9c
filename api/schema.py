"""Request bodies: their JSON Schemas (also served in the OpenAPI document) and their validation."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import falcon
import jsonschema

from actors import osdeps
from actors.job import JobRequest, Status

MAX_ARGS = 4096
MAX_ARG_CHARS = 131072  # Linux's limit for one argument
MAX_URL_CHARS = 2048
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
    },
}

_submit = jsonschema.Draft202012Validator(SUBMIT)


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


def parse_submit(data: Any) -> JobRequest:
    """Validate a POST /jobs body; raises 400 naming the first wrong field and what is allowed."""
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
    return JobRequest(args=args, mime_type=data.get("mime_type", "text/plain"), webhook=webhook, tags=tags)


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
