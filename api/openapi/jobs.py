"""OpenAPI paths of the jobs themselves: submit, list, status, result, cancel, rerun, delete."""

from __future__ import annotations

from typing import Any

from procq.api.openapi.parts import BUSY, TOO_LARGE, UNKNOWN_JOB, body, error, json_reply, operation, path_param, query

_JOB_ID = [path_param("job_id")]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Within 24 h, the same key with the same body returns the original job (200) instead of "
    "making a new one; with a different body it is a 409. Keys survive restarts.",
}

PATHS: dict[str, Any] = {
    "/jobs": {
        "post": operation(
            "Submit a job",
            {
                "201": {**json_reply("The new job.", "Job"), "headers": {"Location": {"schema": {"type": "string"}}}},
                "200": json_reply("A replay: the job this Idempotency-Key made, as it is now.", "Job"),
                "400": error("The body is not a valid job request; the description names the field."),
                "403": error("The key lacks the scope 'jobs:submit', or the command is not allowed (--allow-command)."),
                "409": error("The Idempotency-Key was used with a different body in the last 24 h."),
                "429": {
                    **error("Too many jobs wait already (--max-queued); retry after Retry-After seconds."),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                },
            }
            | TOO_LARGE
            | BUSY,
            requestBody=body("SubmitRequest"),
            parameters=[IDEMPOTENCY_KEY],
        ),
        "get": operation(
            "List jobs, newest first",
            {"200": json_reply("A page of jobs.", "JobList"), "400": error("A query parameter is invalid.")},
            parameters=query("status", "tag", "q", "limit", "cursor"),
        ),
    },
    "/jobs/batch": {
        "post": operation(
            "Submit up to 1,000 jobs at once, all or nothing, in one commit",
            {
                "201": json_reply("The new jobs, in the order given.", "BatchReply"),
                "200": json_reply("A replay: the jobs this Idempotency-Key made, as they are now.", "BatchReply"),
                "400": error("An item is not a valid job request; the description names it: jobs[i]: ..."),
                "403": error("The key lacks the scope 'jobs:submit', or a command is not allowed (--allow-command)."),
                "409": error("The Idempotency-Key was used with a different body in the last 24 h."),
                "429": {
                    **error("Too many jobs wait already (--max-queued); retry after Retry-After seconds."),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                },
                "500": error("The jobs could not be stored (a full disk): none was made."),
            }
            | TOO_LARGE
            | BUSY,
            requestBody=body("BatchRequest"),
            parameters=[IDEMPOTENCY_KEY],
        ),
    },
    "/jobs/{job_id}": {
        "parameters": _JOB_ID,
        "get": operation(
            "A job (the same as /jobs/{job_id}/status)", {"200": json_reply("The job.", "Job")} | UNKNOWN_JOB
        ),
        "delete": operation(
            "Delete a finished job and its files",
            {"204": {"description": "Deleted."}}
            | UNKNOWN_JOB
            | {"409": error("The job is queued, running or delivering its webhook.")},
        ),
    },
    "/jobs/{job_id}/status": {
        "parameters": _JOB_ID,
        "get": operation("A job's state", {"200": json_reply("The job.", "Job")} | UNKNOWN_JOB),
    },
    "/jobs/{job_id}/result": {
        "parameters": _JOB_ID,
        "get": operation(
            "A completed job's stdout",
            {
                "200": {
                    "description": "The exact bytes of stdout.txt, with the job's mime_type as Content-Type.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "409": error(
                    "The job is not COMPLETED (the description names its state), or its stdout.txt is not a "
                    "regular file (the job replaced it with a symlink): never followed."
                ),
                "503": error(
                    "Cluster mode: the result is larger than --cluster-output-cap and the node that ran the job "
                    "is down or unreachable (the description names it)."
                ),
            }
            | UNKNOWN_JOB,
        ),
    },
    "/jobs/{job_id}/cancel": {
        "parameters": _JOB_ID,
        "put": operation(
            "Cancel a queued or running job (waits until its processes are gone)",
            {"200": json_reply("The job, now CANCELED.", "Job"), "409": error("The job has already finished.")}
            | UNKNOWN_JOB
            | BUSY,
        ),
    },
    "/jobs/{job_id}/rerun": {
        "post": operation(
            "Run a finished job's request again as a new job (rerun_of names the original)",
            {
                "201": json_reply("The new job.", "Job"),
                "404": error("Unknown job."),
                "409": error("The job has not finished."),
            },
            parameters=_JOB_ID,
        )
    },
}
