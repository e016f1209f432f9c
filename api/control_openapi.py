"""OpenAPI pieces for deciding what runs (issue 5): the job fields, run records, queues, and their paths.

api/openapi.py (issue 4) merges these into the served document: JOB_FIELDS into the Job schema's
properties, SCHEMAS into components, PATHS into paths, IDEMPOTENCY_KEY into POST /jobs's parameters.
"""

from __future__ import annotations

from typing import Any

from procq.api.schema import QUEUE_UPDATE, SUBMIT

_TIME = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339 in UTC"}
_USAGE = {
    "wall_seconds": {"type": ["number", "null"], "description": "Wall time of the attempt."},
    "cpu_user_seconds": {"type": ["number", "null"], "description": "User CPU of the whole process tree."},
    "cpu_system_seconds": {"type": ["number", "null"], "description": "System CPU of the whole process tree."},
    "peak_rss_bytes": {"type": ["integer", "null"], "description": "Largest sampled resident memory of the tree."},
    "peak_gpu_memory_bytes": {
        "type": ["integer", "null"],
        "description": "Largest sampled GPU memory of the tree (NVIDIA, with procq[gpu] installed); else null.",
    },
}
_REQUEST = SUBMIT["properties"]


def _doc(name: str) -> dict[str, Any]:
    """A request field's schema as the job object shows it (no validation-only keys)."""
    return {k: v for k, v in _REQUEST[name].items() if k not in ("x-message", "default")}


SCHEMAS: dict[str, Any] = {
    "Run": {
        "type": "object",
        "description": "One attempt of a job.",
        "required": ["attempt", "started_at", "completed_at", "exit_code", "error", *_USAGE],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "started_at": _TIME,
            "completed_at": _TIME,
            "exit_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            **_USAGE,
        },
    },
    "Queue": {
        "type": "object",
        "required": ["name", "parallelism", "paused", "queued", "running"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"},
            "parallelism": {"type": "integer", "minimum": 1},
            "paused": {"type": "boolean"},
            "queued": {"type": "integer", "minimum": 0, "description": "IN_QUEUE jobs, waiting ones included."},
            "running": {"type": "integer", "minimum": 0},
        },
    },
    "QueueList": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}}},
    },
    "QueueUpdate": QUEUE_UPDATE,
    "Resources": {
        "type": "object",
        "description": "What the server can hand to jobs (--gpus, --resource) and who holds it now.",
        "required": ["vendor", "gpus", "resources"],
        "properties": {
            "vendor": {"type": ["string", "null"], "enum": ["nvidia", "amd", None]},
            "gpus": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "busy", "job_id"],
                    "properties": {
                        "id": {"type": "string", "description": "As CUDA_VISIBLE_DEVICES takes it."},
                        "name": {"type": "string"},
                        "uuid": {"type": ["string", "null"]},
                        "memory_bytes": {"type": ["integer", "null"]},
                        "busy": {"type": "boolean", "description": "A job holds it."},
                        "job_id": {
                            "type": ["string", "null"],
                            "description": "The job holding it (null for another owner's job when keys are in use).",
                        },
                    },
                },
            },
            "resources": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["total", "in_use", "free"],
                    "properties": {name: {"type": "integer", "minimum": 0} for name in ("total", "in_use", "free")},
                },
            },
        },
    },
}

JOB_FIELDS: dict[str, Any] = {
    **{
        name: _doc(name)
        for name in ("priority", "queue", "timeout_seconds", "max_output_bytes", "max_memory_bytes")
        + ("max_attempts", "retry_backoff_seconds", "cwd", "webhook_events")
    },
    "run_at": {**_TIME, "description": "The job does not start before it (also set while waiting for a retry)."},
    "after": {"type": "array", "items": {"type": "string"}, "description": _REQUEST["after"]["description"]},
    "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra environment."},
    "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}, "description": "Every attempt."},
    "resources": {
        "oneOf": [{"type": "object", "properties": _USAGE}, {"type": "null"}],
        "description": "Usage of the last attempt.",
    },
    "rerun_of": {"type": ["string", "null"], "description": "The job this one reruns (POST /jobs/{id}/rerun)."},
    "requires": {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "description": "The GPUs and counted resources it needs; units of 0 are left out.",
    },
    "assigned": {
        "oneOf": [
            {"type": "object", "properties": {"gpus": {"type": "array", "items": {"type": "string"}}}},
            {"type": "null"},
        ],
        "description": 'What its current or last run was given, like {"gpus": ["1", "3"], "license": 1}; '
        "null while it waits.",
    },
    "idempotency_key_sha256": {"type": ["string", "null"], "description": "SHA-256 of the Idempotency-Key."},
    "request_sha256": {"type": ["string", "null"], "description": "SHA-256 of the submitted body."},
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Within 24 h, the same key with the same body returns the original job (200) instead of "
    "making a new one; with a different body it is a 409. Keys survive restarts.",
}

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


PATHS: dict[str, Any] = {
    "/jobs/{job_id}/rerun": {
        "post": {
            "summary": "Run a finished job's request again as a new job (rerun_of names the original)",
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "201": _json("The new job.", "#/components/schemas/Job"),
                "404": _error("Unknown job."),
                "409": _error("The job has not finished."),
                "default": _error("Any other error: always JSON {title, description}."),
            },
        }
    },
    "/resources": {
        "get": {
            "summary": "The server's GPUs (with the job on each) and counted resources (total, in use, free)",
            "responses": {
                "200": _json("The resources.", "#/components/schemas/Resources"),
                "default": _error("Any other error: always JSON {title, description}."),
            },
        }
    },
    "/queues": {
        "get": {
            "summary": "Every queue with its parallelism, pause state and counts",
            "responses": {
                "200": _json("The queues.", "#/components/schemas/QueueList"),
                "default": _error("Any other error: always JSON {title, description}."),
            },
        }
    },
    "/queues/{name}": {
        "put": {
            "summary": "Pause, resume or resize a queue (creating it if new); running jobs go on",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueueUpdate"}}},
            },
            "responses": {
                "200": _json("The queue.", "#/components/schemas/Queue"),
                "400": _error("A bad name or body."),
                "default": _error("Any other error: always JSON {title, description}."),
            },
        }
    },
}

# Added to POST /jobs's responses next to its 201.
SUBMIT_RESPONSES: dict[str, Any] = {
    "200": _json("A replay: the job this Idempotency-Key made, as it is now.", "#/components/schemas/Job"),
    "409": _error("The Idempotency-Key was used with a different body in the last 24 h."),
}
