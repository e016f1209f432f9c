"""Helpers for the security tests: keys made in a jobs directory, the routes a server offers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests

from procq.api.keys import KeyStore

SCOPES = ("jobs:submit", "jobs:read", "jobs:cancel", "admin")


def make_key(jobs_dir: Path, *scopes: str, name: str = "test") -> tuple[str, str]:
    """(key id, clear key) of a new key in the server's default keys file."""
    key, clear = KeyStore(jobs_dir / ".keys.json").create(name, scopes)
    return key.id, clear


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def expected_scope(method: str, template: str) -> str | None:
    """The scope SPEC.md gives each route, written out here independently of api/auth.py."""
    route = re.sub(r"\{[^}]*\}", "{}", template)
    if route in ("/health", "/") or route.startswith("/ui/"):
        return None  # liveness, and the dashboard's page and static files (no data; it asks for a key)
    if route.startswith("/admin"):
        return "admin"
    if (method, route) in {("POST", "/jobs"), ("POST", "/jobs/{}/rerun")}:
        return "jobs:submit"
    if (method, route) in {("PUT", "/jobs/{}/cancel"), ("DELETE", "/jobs/{}")}:
        return "jobs:cancel"
    if method == "GET":
        return "jobs:read"
    return "admin"  # /queues changes and anything else that writes


def routes_from_openapi(document: dict[str, Any]) -> list[tuple[str, str]]:
    methods = ("get", "post", "put", "delete", "patch")
    return sorted(
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in methods
    )


def routes_from_app(app: Any) -> list[tuple[str, str]]:
    """(method, template) of every responder in a Falcon app's route table (until /openapi.json exists)."""
    found = []
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        for method, responder in (node.method_map or {}).items():
            if getattr(responder, "__self__", None) is node.resource:
                found.append((method, node.uri_template))
    return sorted(found)


def is_json_error(response: requests.Response) -> bool:
    body = response.json()
    return response.headers["Content-Type"].startswith("application/json") and set(body) == {"title", "description"}
