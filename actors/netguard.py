"""Where webhooks may go: the address guard against SSRF, checked on resolution and again on connect."""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

import urllib3
from urllib3.util import connection as _connection

from procq.actors import deadline

# Cloud metadata services outside the link-local range (AWS over IPv6, Alibaba, Oracle): always refused.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are an IPv4 address
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use prefixes: embedding varies, never public


def embedded_addresses(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress._BaseAddress]:
    """The address and every IPv4 address an IPv6 form carries to the network: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::)
    and Teredo (2001:0::/32, server and client). A refusal of any of them refuses the whole."""
    found: list[ipaddress._BaseAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated, still routed by some stacks)
            found.append(low)
        if ip in _NAT64:
            found.append(low)
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip.teredo is not None:
            found.extend(ip.teredo)
    return found


def address_refusal(address: str, deny_private: bool) -> str | None:
    """Why procq will not connect to this IP address, or None. Link-local (169.254.0.0/16, fe80::/10:
    cloud metadata services live there) and known metadata addresses are always refused, also when
    wrapped in an IPv6 form (see embedded_addresses); with deny_private, every address that is not
    globally routable (private, loopback, shared, reserved, unspecified) and multicast too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    for candidate in embedded_addresses(ip):
        shown = str(candidate) if candidate == ip else f"{candidate} (inside {ip})"
        if candidate.is_link_local or candidate in METADATA:
            return f"refused: {shown} is a link-local or cloud metadata address"
        if deny_private and (not candidate.is_global or candidate.is_multicast or candidate in _NAT64_LOCAL):
            return f"refused: {shown} is a private, loopback or reserved address (--webhook-deny-private)"
    return None


def host_refusal(host: str | None) -> str | None:
    """Why a URL's host is not one to look up, or None: missing, or with control characters, spaces or
    '%' outside an IPv6 zone (a resolver cuts a name at NUL and would be asked about another one)."""
    if not host:
        return "the URL has no host"
    name = host.split("%", 1)[0] if ":" in host else host  # an IPv6 literal may carry a zone id
    if any(ord(char) < 0x21 or 0x7F <= ord(char) < 0xA0 or char in "%\\" for char in name):
        return f"the host {host!r} contains control characters, spaces or '%'"
    return None


def target_refusal(url: str, deny_private: bool) -> str | None:
    """Resolve the URL's host and refuse it if any of its addresses is refused (checked again at
    connect time, against the address actually used, so DNS rebinding cannot slip past)."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in url):  # urlsplit drops tabs, so look first
        return "refused: the URL contains control characters"
    try:
        parts = urlsplit(url)
        refusal = host_refusal(parts.hostname)
        if refusal is not None:
            return f"refused: {refusal}"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"cannot resolve the webhook's host in {url[:200]!r}: {exc}"
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
    bound = deadline.current()  # the whole delivery's deadline: connecting counts too
    for info in infos:  # each address in turn, as a plain connect would (localhost: ::1, then 127.0.0.1)
        timeout = conn.timeout if bound is None else min(conn.timeout or bound.remaining(), bound.remaining())
        try:
            sock = _connection.create_connection(
                (info[4][0], conn.port),
                timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
            if bound is not None:
                bound.watch(conn, sock)
            return sock
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
