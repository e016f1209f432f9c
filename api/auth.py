"""Authentication and authorisation: which scope each route needs, Bearer keys, and job ownership."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon

from procq.actors.errors import JobNotFound
from procq.actors.job import is_job_id
from procq.api.ask import ask
from procq.api.keys import ApiKey, KeyStore
from procq.api.relay import ThisNode, is_relayed

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy

# Routes anyone may call once keys exist: liveness for load balancers, and the dashboard's static
# files (they hold no data; the page asks for a key before it fetches any).
PUBLIC_PATHS = re.compile(r"/health|/|/ui(/.*)?")

# Writes that are not admin-only; every other write needs admin, so a route added later without an
# entry here is closed, not open.
WRITE_SCOPES = {
    ("POST", "/jobs"): "jobs:submit",
    ("POST", "/jobs/{}/rerun"): "jobs:submit",
    ("PUT", "/jobs/{}/cancel"): "jobs:cancel",
    ("DELETE", "/jobs/{}"): "jobs:cancel",
}
_PARAM = re.compile(r"\{[^}]*\}")


def scope_for(method: str, template: str) -> str:
    """The scope a request needs, from its method and route template (e.g. "/jobs/{job_id}/cancel")."""
    route = _PARAM.sub("{}", template)
    if route == "/admin" or route.startswith("/admin/"):
        return "admin"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "jobs:read"
    return WRITE_SCOPES.get((method, route), "admin")


def owner_filter(req: falcon.Request) -> str | None:
    """The owner whose jobs this request may see: its key's id, or None (all jobs) for an admin key
    or when auth is off. Listings filter by it; single jobs are checked by the middleware."""
    key: ApiKey | None = req.context.get("api_key")
    if key is None or key.allows("admin"):
        return None
    return key.id


def owner_of_request(req: falcon.Request) -> str | None:
    """The id of the key making the request (recorded as a new job's `owner`), or None."""
    key: ApiKey | None = req.context.get("api_key")
    return key.id if key else None


class AuthMiddleware:
    """Once a key exists: 401 without a valid `Authorization: Bearer <key>`, 403 when the key lacks
    the route's scope, 404 for a job another key owns (unless admin). Runs on waitress threads."""

    def __init__(self, keys: KeyStore, dispatcher: DispatcherProxy, node: ThisNode | None = None) -> None:
        self._keys = keys
        self._dispatcher = dispatcher
        self._node = node  # cluster mode: another node may relay a job's result and logs here

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Before routing, so an unknown path answers 401 too and does not reveal what exists.
        req.context.api_key = None
        if PUBLIC_PATHS.fullmatch(req.path) or not self._keys.required:
            return
        if is_relayed(req, self._node):  # the relaying node checked the caller's key and its job
            return
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Send an API key as 'Authorization: Bearer <key>'.", error=False)
        key = self._keys.authenticate(token.strip())
        if key is None:
            raise _unauthorized("The API key is not valid: unknown or revoked.", error=True)
        req.context.api_key = key
        req.context.key_still_valid = _still_valid(self._keys, token.strip())  # streams end once it is revoked

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        key: ApiKey | None = req.context.api_key
        if key is None:
            return
        scope = scope_for(req.method, req.uri_template or req.path)
        if not key.allows(scope):
            raise falcon.HTTPForbidden(
                title="Missing scope",
                description=f"{req.method} {req.uri_template} needs the scope {scope!r}; "
                f"key {key.id} has {', '.join(key.scopes)}.",
            )
        job_id = params.get("job_id")
        if is_job_id(job_id) and not key.allows("admin"):
            job = ask(self._dispatcher.get(job_id))
            if job.owner != key.id:
                raise JobNotFound(job_id)  # the same answer as for an unknown id: nothing leaks


def _still_valid(keys: KeyStore, token: str, every_s: float = 0.25) -> Callable[[], bool]:
    """Whether the key is still valid, asked of the keys file at most every `every_s` (it is re-read
    when it changes, so a revocation is seen within that time)."""
    checked = [time.monotonic(), True]

    def still_valid() -> bool:
        if checked[1] and time.monotonic() - checked[0] >= every_s:
            checked[:] = [time.monotonic(), keys.authenticate(token) is not None]
        return bool(checked[1])

    return still_valid


def _unauthorized(description: str, error: bool) -> falcon.HTTPUnauthorized:
    challenge = 'Bearer realm="procq", error="invalid_token"' if error else 'Bearer realm="procq"'
    return falcon.HTTPUnauthorized(title="Authentication required", description=description, challenges=[challenge])
