"""Where webhooks may go: the address guard against SSRF, checked on resolution and again on connect."""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

import urllib3
from urllib3.util import connection as _connection


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
def checked_pools(deny_private: bool) -> dict[str, type]:
    """urllib3 pool classes whose connections go only to allowed addresses (see _checked_connect)."""

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
