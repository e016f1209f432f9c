"""Refuses requests that other web sites make through a visitor's browser.

A page on any site can make the browser send a "simple" request (a form post, or fetch with a
text/plain body) to http://localhost:PORT without asking the server first, and DNS rebinding can make
a foreign name point at 127.0.0.1. procq runs commands, so it takes no such request: browsers name the
page's origin in `Origin` and `Sec-Fetch-Site`, simple requests cannot carry `application/json`, and a
rebound name still arrives in `Host`. Our own dashboard is same-origin and sends JSON, so it passes.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import falcon

# Content types a browser may send cross-site without a CORS preflight (plus none at all).
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback_host(host: str) -> bool:
    """Whether a Host header value (name or address, with an optional port) names this machine's loopback."""
    name = _strip_port(host).lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def origin_refusal(origin: str | None, fetch_site: str | None, host: str | None) -> str | None:
    """Why a request's Origin / Sec-Fetch-Site show it comes from another site, or None."""
    site = (fetch_site or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site is {site!r}: procq takes no requests made by other web sites' pages."
    if origin is None:
        return None  # not a browser request (curl, the Python client) or a same-origin GET
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or host is None or netloc != host.strip().lower():
        return (
            f"Origin {_clip(origin)} is not this server's own origin: procq takes no requests made by other "
            "web sites' pages. Use the dashboard served by procq itself, or a client that is not a browser."
        )
    return None


def content_type_refusal(method: str, content_type: str | None, content_length: int | None) -> str | None:
    """Why the body's Content-Type is not acceptable, or None: a body must be declared JSON."""
    if method in SAFE_METHODS:
        return None
    media = (content_type or "").partition(";")[0].strip().lower()
    has_body = bool(content_length)
    if media in SIMPLE_TYPES or (has_body and not _is_json(media)):
        got = f"Content-Type {_clip(content_type)}" if content_type else "no Content-Type"
        return f"Request bodies are JSON: send the header 'Content-Type: application/json' (got {got})."
    return None


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _clip(text: str | None, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CrossSiteMiddleware:
    """403 for another site's Origin or Sec-Fetch-Site, 415 for a body not sent as JSON, and, when the
    server listens only on loopback, 403 for a Host that is not a loopback name (DNS rebinding)."""

    def __init__(self, loopback_only: bool) -> None:
        self._loopback_only = loopback_only

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        host = req.get_header("Host")
        if self._loopback_only and host is not None and not is_loopback_host(host):
            raise falcon.HTTPForbidden(
                title="Foreign Host",
                description=f"Host {_clip(host)} is not a loopback name or address, and this server listens "
                "only on loopback: call it as localhost, 127.0.0.1 or [::1].",
            )
        refusal = origin_refusal(req.get_header("Origin"), req.get_header("Sec-Fetch-Site"), host)
        if refusal is not None:
            raise falcon.HTTPForbidden(title="Cross-site request refused", description=refusal)
        refusal = content_type_refusal(req.method, req.content_type, req.content_length)
        if refusal is not None:
            raise falcon.HTTPUnsupportedMediaType(title="Send JSON", description=refusal)
