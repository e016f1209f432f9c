"""Request bodies: their JSON Schemas (also served in the OpenAPI document) and their validation."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import falcon
import jsonschema

from actors import osdeps
from actors.job import JobRequest

MAX_ARGS = 4096
MAX_ARG_CHARS = 131072  # Linux's limit for one argument
MAX_URL_CHARS = 2048
# type/subtype with optional parameters; no CR/LF, so it can never split the Content-Type header.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
MEDIA_TYPE = rf"^{_TOKEN}/{_TOKEN}( *; *{_TOKEN}=({_TOKEN}|\"[^\"\r\n\\\\]*\"))*$"

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
    return JobRequest(args=args, mime_type=data.get("mime_type", "text/plain"), webhook=webhook)


def _describe(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "additionalProperties":
        allowed = ", ".join(SUBMIT["properties"])
        return f"{error.message}; the fields are: {allowed}"
    field_schema = SUBMIT["properties"].get(str(error.absolute_path[0])) if error.absolute_path else None
    if error.validator == "pattern" and field_schema:
        return f"{path}: {field_schema['x-message']}"
    if error.validator == "type" and not path:
        return 'The body must be a JSON object such as {"args": ["echo", "hi"]}'
    if error.validator in _SIZES and isinstance(error.instance, list | str | dict):
        unit = _SIZES[error.validator]
        return f"{path} has {len(error.instance)} {unit}; at most {error.validator_value} {unit} are allowed"
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
