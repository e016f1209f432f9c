"""The shapes of the API's bodies, as data: `components/schemas` of the OpenAPI document. The request schemas
come from api/schema.py, the very objects that validate requests; the others describe answers."""

from __future__ import annotations

from typing import Any

from procq.actors.events import EVENT_FIELDS
from procq.actors.job import JOB_ID_PATTERN, QUEUE_NAME_PATTERN, DeliveryState, Status
from procq.api.keys import KEY_ID, SCOPES
from procq.api.openapi.parts import TIME, ref
from procq.api.schema import NEW_KEY, QUEUE_UPDATE, SUBMIT

_STATUS = {"type": "string", "enum": [status.value for status in Status]}
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


def _as_shown(name: str) -> dict[str, Any]:
    """A request field's schema as the job object shows it (no validation-only keys)."""
    return {k: v for k, v in SUBMIT["properties"][name].items() if k not in ("x-message", "default")}


# The job object's fields: what was asked, where it stands, its runs, who submitted it.
JOB_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "pattern": JOB_ID_PATTERN},
    "args": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "mime_type": {"type": "string"},
    "webhook": {"type": ["string", "null"]},
    "status": _STATUS,
    "pid": {"type": ["integer", "null"]},
    "pid_started_at": {"type": ["number", "null"]},
    "exit_code": {"type": ["integer", "null"]},
    "error": {"type": ["string", "null"]},
    "attempts": {"type": "integer", "minimum": 0},
    "enqueued_at": TIME,
    "started_at": TIME,
    "completed_at": TIME,
    "node": {"type": ["string", "null"], "description": "Cluster mode: the node that runs or last ran it."},
    "interrupted": {"type": ["string", "null"]},
    "cancel_requested_at": {**TIME, "description": "A cancel of the running job was asked for (and recorded)."},
    "webhook_delivery": {"oneOf": [ref("Delivery"), {"type": "null"}]},
    "tags": SUBMIT["properties"]["tags"],
    **{
        name: _as_shown(name)
        for name in ("priority", "queue", "timeout_seconds", "max_output_bytes", "max_memory_bytes")
        + ("max_attempts", "retry_backoff_seconds", "cwd", "webhook_events")
    },
    "run_at": {**TIME, "description": "The job does not start before it (also set while waiting for a retry)."},
    "after": {"type": "array", "items": {"type": "string"}, "description": _as_shown("after")["description"]},
    "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra environment."},
    "runs": {"type": "array", "items": ref("Run"), "description": "Every attempt."},
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
    "owner": {
        "type": ["string", "null"],
        "description": "The id of the API key that submitted the job; null when no keys were in use.",
    },
}

_JOBS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["title", "description"],
        "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
    },
    "SubmitRequest": SUBMIT,
    "Job": {
        "type": "object",
        "description": "A job. More fields may appear; clients ignore fields they do not know.",
        "required": ["id", "args", "mime_type", "webhook", "status", "pid", "exit_code", "error", "attempts"]
        + ["enqueued_at", "started_at", "completed_at", "tags"],
        "properties": JOB_FIELDS,
    },
    "Delivery": {
        "type": "object",
        "required": ["state", "attempts"],
        "properties": {
            "state": {"type": "string", "enum": [state.value for state in DeliveryState]},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": TIME,
            "delivered_at": TIME,
        },
    },
    "Run": {
        "type": "object",
        "description": "One attempt of a job.",
        "required": ["attempt", "started_at", "completed_at", "exit_code", "error", *_USAGE],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "started_at": TIME,
            "completed_at": TIME,
            "exit_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            **_USAGE,
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 1000, "items": SUBMIT}},
    },
    "BatchReply": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": ref("Job")}},
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as ?cursor= for the next page."},
        },
    },
}

_WATCHING: dict[str, Any] = {
    "JobEvent": {
        "type": "object",
        "description": "The data of an `event: job` on GET /events.",
        "required": list(EVENT_FIELDS),
        "properties": {"id": {"type": "string"}, "status": _STATUS}
        | {name: TIME for name in EVENT_FIELDS if name.endswith("_at")}
        | {"node": {"type": ["string", "null"], "description": "Cluster mode only: the node that runs or ran it."}},
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

_QUEUES: dict[str, Any] = {
    "Queue": {
        "type": "object",
        "required": ["name", "parallelism", "paused", "queued", "running"],
        "properties": {
            "name": {"type": "string", "pattern": QUEUE_NAME_PATTERN},
            "parallelism": {"type": "integer", "minimum": 1},
            "paused": {"type": "boolean"},
            "queued": {"type": "integer", "minimum": 0, "description": "IN_QUEUE jobs, waiting ones included."},
            "running": {"type": "integer", "minimum": 0},
        },
    },
    "QueueList": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "array", "items": ref("Queue")}},
    },
    "QueueUpdate": QUEUE_UPDATE,
    "NodeList": {
        "type": "object",
        "required": ["nodes"],
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "address", "slots", "state", "running", "heartbeat_at"],
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"type": "string", "description": "Where its API listens."},
                        "slots": {"type": "integer", "description": "Its worker slots (--workers)."},
                        "resources": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "state": {"type": "string", "enum": ["up", "left", "lost"]},
                        "running": {"type": "integer", "description": "Jobs running on it now."},
                        "started_at": {"type": "string", "format": "date-time"},
                        "heartbeat_at": {"type": "string", "format": "date-time"},
                        "lease_until": {"type": "string", "format": "date-time"},
                    },
                },
            }
        },
    },
    "Resources": {
        "type": "object",
        "description": "What the server can hand to jobs (--gpus, --resource) and who holds it now.",
        "required": ["vendor", "gpus", "resources"],
        "properties": {
            "vendor": {"enum": ["nvidia", "amd", None]},
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

_KEYS: dict[str, Any] = {
    "NewKeyRequest": NEW_KEY,
    "ApiKey": {
        "type": "object",
        "required": ["id", "name", "scopes", "created_at", "revoked_at"],
        "properties": {
            "id": {"type": "string", "pattern": f"^{KEY_ID.pattern}$"},
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": TIME,
        },
    },
    "NewApiKey": {
        "allOf": [ref("ApiKey")],
        "type": "object",
        "required": ["key"],
        "properties": {"key": {"type": "string", "description": "The clear key; shown this once."}},
    },
    "KeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": ref("ApiKey")}},
    },
}

SCHEMAS: dict[str, Any] = _JOBS | _WATCHING | _QUEUES | _KEYS
