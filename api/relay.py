"""Cluster mode: a job's result and logs through any node. A node that does not hold the job's files
relays the request to the node that does, at the address that node registered in the database; a
finished job's output comes from the copy its node kept in the database, so it outlives the node.

Whom to ask is never the request's to say: the target is the job's node, looked up by name in the
`nodes` table, and only an `http://host:port` address that node announced itself. Between nodes,
the caller's credentials are not forwarded (each node has its own keys file); the relaying node has
checked them, and it names itself with the cluster's node secret (kept in the database, which every
node trusts already). The node asked accepts that secret for reading a job's result and logs only.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import falcon
import requests

from procq.actors import netguard
from procq.actors.job import Job, Status
from procq.api import sse
from procq.api.ask import ask

if TYPE_CHECKING:
    from procq.actors.cluster.outputs import Kept
    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.api.relay")

HEADER = "X-Procq-Relay"  # carries the node secret on a request one node relays to another
CONNECT_S = 3.0  # the owner is up (its lease holds): it answers at once or it is not there
READ_S = 30.0  # most silence in a plain answer
FOLLOW_READ_S = sse.HEARTBEAT_S + 10  # a follower's stream is never silent longer than the heartbeat
CHUNK_BYTES = 64 * 1024
RELAYED = re.compile(r"/jobs/[A-Za-z0-9_-]{1,64}/(logs|result)")  # all the node secret may read


@dataclass(frozen=True, slots=True)
class ThisNode:
    """This server's place in a cluster, as the API needs it."""

    name: str
    secret: str  # shared by the cluster's nodes (actors/cluster/nodes.py)
    # a finished job's output as its node kept it in the database (the store's, read from any thread:
    # megabytes need not pass through the Dispatcher's inbox)
    kept_output: Callable[[str, str], Kept | None] = lambda job_id, stream: None


def is_relayed(req: falcon.Request, node: ThisNode | None) -> bool:
    """A GET of a job's result or logs that another node of this cluster relayed (it checked the caller)."""
    given = req.get_header(HEADER)
    if node is None or given is None or req.method != "GET":
        return False
    return RELAYED.fullmatch(req.path) is not None and hmac.compare_digest(given.encode(), node.secret.encode())


def base_url(address: str | None) -> str | None:
    """The node's announced address if it is one to relay to (http://host:port, not a wildcard, not
    link-local or a cloud metadata service), else None."""
    if not address:
        return None
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme != "http" or not host or port is None or parts.path not in ("", "/") or parts.query:
        return None
    if netguard.host_refusal(host) is not None:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{parts.netloc}"  # a host name: the node's own announcement
    if ip.is_unspecified or netguard.address_refusal(str(ip), deny_private=False) is not None:
        return None
    return f"http://{parts.netloc}"


class Relay:
    """Serves what another node holds. Runs on waitress threads; blocks only with timeouts."""

    def __init__(self, dispatcher: DispatcherProxy, node: ThisNode, slots: sse.StreamSlots) -> None:
        self._dispatcher = dispatcher
        self.node = node
        self._slots = slots

    def holder(self, req: falcon.Request, job: Job) -> str | None:
        """The other node that holds this job's files, or None when this node answers from its own
        (its job, a queued one, or a request another node relayed here: never relayed twice)."""
        if job.node is None or job.node == self.node.name or job.status is Status.IN_QUEUE:
            return None
        return None if is_relayed(req, self.node) else job.node

    def kept(self, job: Job, stream: str) -> bytes | None:
        """The whole output its node kept in the database for a finished job, or None."""
        if not job.status.terminal:
            return None
        kept = self.node.kept_output(job.id, f"{stream}.txt")
        return kept.data if kept is not None and kept.complete else None

    def forward(self, req: falcon.Request, resp: falcon.Response, job: Job, path: str, params: dict[str, Any]) -> None:
        """Answer with what the job's node answers to GET `path` (status, headers, streamed body).
        503 naming the node when it is not up or cannot be reached."""
        assert job.node is not None
        peer = ask(self._dispatcher.peer(job.node))
        if peer is None or peer["state"] != "up":
            state = "unknown" if peer is None else peer["state"]
            raise unavailable(job, f"node {job.node} is not up (state: {state})")
        url = base_url(peer["address"])
        if url is None:
            raise unavailable(job, f"node {job.node} announced no address to relay to ({peer['address']!r})")
        follow = bool(params.get("follow")) or sse.wants_stream(req)
        headers = {HEADER: self.node.secret, "Accept": req.get_header("Accept") or "*/*"}
        if req.get_header("Last-Event-ID") is not None:
            headers["Last-Event-ID"] = req.get_header("Last-Event-ID")
        query = {name: str(value).lower() if isinstance(value, bool) else value for name, value in params.items()}
        try:
            upstream = requests.get(
                url + path,
                params=query,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_S, FOLLOW_READ_S if follow else READ_S),
            )
        except requests.RequestException as exc:
            raise unavailable(job, f"node {job.node} could not be reached at {url}: {exc}") from exc
        body = _body(upstream)
        if upstream.status_code == 200 and upstream.headers.get("Content-Type", "").startswith(sse.MEDIA_TYPE):
            sse.start(resp, self._slots, lambda: body, cleanup=upstream.close, gone=sse.client_gone(req))
            return
        resp.status = upstream.status_code
        for name in ("Content-Type", "X-Next-Offset", "Retry-After"):
            if name in upstream.headers:
                resp.set_header(name, upstream.headers[name])
        length = upstream.headers.get("Content-Length")
        resp.set_stream(_Closing(body, upstream), int(length) if length and length.isdigit() else None)


def unavailable(job: Job, why: str) -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(
        title="Output only on its node",
        description=f"Job {job.id}'s output is on node {job.node}, and {why}; bring node {job.node} back "
        "(GET /nodes gives its address) or ask it directly.",
        retry_after=5,
    )


def _body(upstream: requests.Response) -> Iterator[bytes]:
    """The upstream body as it arrives (an SSE event is passed on as soon as it comes). A connection
    cut midway ends the body short: the client sees a cut answer (or reconnects to follow), never a wrong one."""
    try:
        yield from upstream.iter_content(CHUNK_BYTES)
    except requests.RequestException as exc:
        log.warning("relayed answer cut: %s", exc)


class _Closing:
    """A relayed plain body that closes the upstream connection when the server is done with it."""

    def __init__(self, body: Iterator[bytes], upstream: requests.Response) -> None:
        self._body = body
        self._upstream = upstream

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        self._upstream.close()
