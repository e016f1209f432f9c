"""Turning a request into what the actors take: JSON bodies and query parameters, checked against the schemas
of api/schema.py, with 400/413 answers that name the field, the value and what is allowed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon
import jsonschema

from procq.actors import netguard, osdeps
from procq.actors.job import QUEUE_NAME_PATTERN, JobRequest, timestamp
from procq.actors.supervise.spawn import resolve_cwd
from procq.api import strictjson
from procq.api.schema import MAX_ENV_TOTAL, QUERY, QUEUE_UPDATE, SUBMIT

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
        return strictjson.loads(body)
    except strictjson.BadJSON as exc:
        raise falcon.HTTPBadRequest(title="Invalid JSON", description=str(exc)) from exc


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
    if webhook is not None and not _webhook_host(webhook):
        raise _invalid(f"webhook: {SUBMIT['properties']['webhook']['x-message']}; got {_short(webhook)}")
    tags = tuple(dict.fromkeys(data.get("tags", ())))  # duplicates dropped, order kept
    return JobRequest(
        args=args,
        mime_type=data.get("mime_type", "text/plain"),
        webhook=webhook,
        tags=tags,
        **_control_fields(data, cwd_root),
    )


def _webhook_host(url: str) -> str | None:
    """The URL's host if it is one procq may look up; None for a malformed URL ('http://[zz/') or a
    host with control characters (a resolver would cut it at a NUL and ask about another name)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return None if netguard.host_refusal(host) else host


def _control_fields(data: dict[str, Any], cwd_root: Path | None) -> dict[str, Any]:
    """The ordering, limit and retry fields of an already schema-checked body."""
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
    fields["requires"] = tuple(sorted((name, int(units)) for name, units in data.get("requires", {}).items() if units))
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
    if re.fullmatch(QUEUE_NAME_PATTERN[1:-1], name) is None:
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
            text = raw.strip()  # ASCII digits only, and few enough of them (int() takes '²' and 4,300 digits)
            value = strictjson.parse_decimal(text.removeprefix("-"))
            if value is None:
                raise ValueError(raw)
            return -value if text.startswith("-") else value
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
