"""What a request may hold, as data: the JSON Schemas of bodies and query parameters. api/parse.py validates
with them and api/openapi/ shows the very same objects."""

from __future__ import annotations

from typing import Any

from procq.actors.job import DEFAULT_QUEUE, JOB_ID_PATTERN, QUEUE_NAME_PATTERN, Status
from procq.api.keys import KEY_NAME, SCOPES

MAX_ARGS = 4096
MAX_ARG_CHARS = 131072  # Linux's limit for one argument
MAX_URL_CHARS = 2048
MAX_DELAY_S = 366 * 86400  # a year: run_at/delay/timeout beyond that is almost surely a unit mistake
MAX_ENV_VARS = 128
MAX_INT = 2**63 - 1  # what 64-bit readers of meta.json take
MAX_ENV_CHARS = 32768
MAX_ENV_TOTAL = 131072  # names and values together
ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]{0,127}$"
WEBHOOK_EVENTS = ("start", "logs", "completed")
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
# type/subtype with optional parameters; no CR/LF, so it can never split the Content-Type header.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
MEDIA_TYPE = rf"^{_TOKEN}/{_TOKEN}( *; *{_TOKEN}=({_TOKEN}|\"[^\"\r\n\\\\]*\"))*$"

TAG: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
_TAG_TEXT = "1 to 64 characters of A-Z a-z 0-9 _ . : -"

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
            "x-message": f"tags must be a list of at most 16 strings of {_TAG_TEXT}",
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
            "pattern": QUEUE_NAME_PATTERN,
            "default": DEFAULT_QUEUE,
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
            "items": {"type": "string", "pattern": JOB_ID_PATTERN},
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
            "maximum": MAX_INT,
            "description": "Limit on stdout + stderr of an attempt; past it the tree is ended, the attempt "
            "FAILED, and the files cut to the limit. Default: the server's --max-output-bytes.",
        },
        "max_memory_bytes": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_INT,
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
        "requires": {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_-]{0,31}$"},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "description": 'GPUs and counted resources the job needs, like {"gpus": 2, "license": 1}: it '
            "starts only when the server has them free, and its child sees only the GPUs it was given. More "
            "than the server has in all, or a resource it lacks, is a 400 that says what it has.",
            "x-message": "requires must map resource names (a-z 0-9 _ -, starting with a letter) to whole "
            "numbers from 0 to 1000000",
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

# Query parameters, by name: api/parse.py checks them and the OpenAPI document shows the same objects.
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
        "x-message": f"tag must be {_TAG_TEXT}",
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
    "q": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "description": "Search: jobs whose id starts with it, whose command line contains it (ignoring case), "
        "or that have it as a tag. It scans the jobs the other filters leave, newest first.",
        "x-message": "q must be 1 to 200 characters",
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

# POST /admin/keys, as the OpenAPI document shows it; api/admin.py checks the body field by field.
NEW_KEY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "scopes"],
    "properties": {
        "name": {"type": "string", "pattern": f"^{KEY_NAME.pattern}$"},
        "scopes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(SCOPES)}},
    },
}
