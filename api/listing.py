"""GET /jobs (pages of jobs from the Dispatcher's index, with an opaque cursor) and DELETE /jobs/{id}."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import falcon
from procq.actors.errors import JobNotFound
from procq.actors.job import Status, is_job_id
from procq.api.auth import owner_filter
from procq.api.schema import QUERY, parse_query

ASK_TIMEOUT_S = 10.0
DELETE_WAIT_S = 5.0  # how long DELETE waits for the directory to go before answering anyway


def list_page(dispatcher: Any, req: falcon.Request) -> dict[str, Any]:
    """The body of GET /jobs: {"jobs": [...], "next_cursor": str | None}."""
    query = parse_query(req, "status", "tag", "q", "limit", "cursor")
    statuses = frozenset(Status(s) for s in query["status"]) if "status" in query else None
    before = decode_cursor(query["cursor"]) if "cursor" in query else None
    future = dispatcher.list_jobs(
        statuses, query.get("tag"), before, query["limit"], owner_filter(req), search=query.get("q")
    )
    jobs, last = future.get(timeout=ASK_TIMEOUT_S)
    return {"jobs": [job.to_dict() for job in jobs], "next_cursor": encode_cursor(last) if last else None}


def encode_cursor(job_id: str) -> str:
    """The cursor after `job_id`: its 16 bytes in URL-safe base64. Opaque to clients, so the
    paging key may change without breaking them."""
    return base64.urlsafe_b64encode(bytes.fromhex(job_id)).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).hex()
    except (binascii.Error, ValueError):
        job_id = ""
    if not is_job_id(job_id):
        raise falcon.HTTPBadRequest(
            title="Invalid query parameter",
            description=f"{QUERY['cursor']['x-message']}; got cursor={cursor!r}",
        )
    return job_id


class JobResource:
    """GET /jobs/{job_id}: the job, as /status gives it (the first URL people try); DELETE: forget a
    finished job and remove its directory."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        resp.media = self._dispatcher.get(job_id).get(timeout=ASK_TIMEOUT_S).to_dict()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        if not is_job_id(job_id):  # never let a request's text near a path
            raise JobNotFound(job_id)
        removed = self._dispatcher.delete(job_id).get(timeout=ASK_TIMEOUT_S)
        # The job is already gone from every answer; a directory Windows still holds open is
        # removed by a later sweep, so the client need not wait for that.
        removed.wait(DELETE_WAIT_S)
        resp.status = falcon.HTTP_204
