"""GET /jobs: pages of jobs from the Dispatcher's index, with an opaque cursor."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import falcon

from procq.actors.job import Status, is_job_id
from procq.api.ask import ask
from procq.api.auth import owner_filter
from procq.api.parse import parse_query
from procq.api.schema import QUERY

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


def list_page(dispatcher: DispatcherProxy, req: falcon.Request) -> dict[str, Any]:
    """The body of GET /jobs: {"jobs": [...], "next_cursor": str | None}."""
    query = parse_query(req, "status", "tag", "q", "limit", "cursor")
    statuses = frozenset(Status(s) for s in query["status"]) if "status" in query else None
    before = decode_cursor(query["cursor"]) if "cursor" in query else None
    future = dispatcher.list_jobs(
        statuses, query.get("tag"), before, query["limit"], owner_filter(req), search=query.get("q")
    )
    jobs, last = ask(future)
    return {"jobs": jobs, "next_cursor": encode_cursor(last) if last else None}


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
