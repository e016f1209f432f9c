"""The completion webhook: its payload, one delivery attempt, and the backoff between attempts."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from procq.actors.job import Job
from urllib3.util import connection as _connection


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard we try: `max_attempts` deliveries, waiting base * 2**(n-1) seconds (at most cap) after
    failure n. The defaults retry for about four minutes before giving up."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 10.0

    def delay_after(self, failures: int) -> float:
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1))


def payload(job: Job) -> bytes:
    body = {
        "id": job.id,
        "status": job.status.value,
        "result_url": f"/jobs/{job.id}/result",  # sent for every state, as the contract fixes: 409 unless COMPLETED
        "status_url": f"/jobs/{job.id}",  # the whole job: exit code, error, runs
    }
    return json.dumps(body).encode("utf-8")


def send(
    url: str,
    body: bytes,
    timeout_s: float,
    secret: bytes | None = None,
    deny_private: bool = False,
    now: Callable[[], float] = time.time,
) -> str | None:
    """POST one delivery. Blocks up to timeout_s; returns None on a 2xx, else the error in words.
    With `secret`, the delivery is signed (Standard Webhooks). Link-local targets are always refused,
    private and loopback ones too with `deny_private`; a refusal is returned as the error."""
    refusal = target_refusal(url, deny_private)
    if refusal is not None:
        return refusal
    headers = {"Content-Type": "application/json", "User-Agent": "procq-webhook"}
    if secret is not None:
        headers.update(signature_headers(secret, message_id(body), int(now()), body))
    with requests.Session() as session:
        # Deliberate: no proxy from the environment (Windows system proxies could divert callbacks),
        # and no redirects: a receiver must answer at the URL the client gave.
        session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(max_retries=0)
        adapter.poolmanager.pool_classes_by_scheme = _checked_pools(deny_private)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} from the receiver"


# --- signing (https://www.standardwebhooks.com) ---------------------------------------------------


def parse_secret(text: str) -> bytes:
    """The signing key: "whsec_<base64>" as Standard Webhooks tools print it, else the text's bytes.
    Raises ValueError for a whsec_ secret that is not base64."""
    if text.startswith("whsec_"):
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    return text.encode("utf-8")


def message_id(body: bytes) -> str:
    # The same for every retry of one delivery (receivers deduplicate on it) and different for any
    # other message: the body names the job and the state it reached.
    return "msg_" + hashlib.sha256(body).hexdigest()[:32]


def signature_headers(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256 of id.timestamp.body>")."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode("ascii")
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}


# --- where deliveries may go ---------------------------------------------------------------------


def address_refusal(address: str, deny_private: bool) -> str | None:
    """Why procq will not connect to this IP address, or None. Link-local (169.254.0.0/16, fe80::/10:
    cloud metadata services live there) is always refused; with deny_private, every address that is
    not globally routable (private, loopback, shared, reserved) and multicast too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"refused: {ip} is a link-local address (such as a cloud metadata service)"
    if deny_private and (not ip.is_global or ip.is_multicast):
        return f"refused: {ip} is a private, loopback or reserved address (--webhook-deny-private)"
    return None


def target_refusal(url: str, deny_private: bool) -> str | None:
    """Resolve the URL's host and refuse it if any of its addresses is refused (checked again at
    connect time, against the address actually used, so DNS rebinding cannot slip past)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"cannot resolve the webhook's host {parts.hostname!r}: {exc}"
    for info in infos:
        refusal = address_refusal(str(info[4][0]), deny_private)
        if refusal is not None:
            return f"{refusal}; {parts.hostname} resolves to it"
    return None


def _checked_connect(conn: urllib3.connection.HTTPConnection, deny_private: bool) -> socket.socket:
    """Connect to the first allowed address of the host, refusing before any packet is sent to a
    refused one; TLS still checks the certificate against the host name (conn.host is unchanged)."""
    infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0])
        refusal = address_refusal(address, deny_private)
        if refusal is not None:
            raise urllib3.exceptions.NewConnectionError(conn, refusal)
    error: OSError | None = None
    for info in infos:  # each address in turn, as a plain connect would (localhost: ::1, then 127.0.0.1)
        try:
            return _connection.create_connection(
                (info[4][0], conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(conn, f"connect to {conn.host} timed out") from exc
        except OSError as exc:
            error = exc
    raise urllib3.exceptions.NewConnectionError(conn, f"failed to connect to {conn.host}: {error}")


@functools.cache
def _checked_pools(deny_private: bool) -> dict[str, type]:
    class HTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _checked_connect(self, deny_private)

    class HTTPSConnection(urllib3.connection.HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _checked_connect(self, deny_private)

    class HTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = HTTPConnection

    class HTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection

    return {"http": HTTPPool, "https": HTTPSPool}
