"""OpenAPI for who may call what: the /admin/keys paths, the Bearer scheme, and each operation's scope with its
401/403 answers (from the same rules api/auth.py enforces)."""

from __future__ import annotations

from typing import Any

from procq.api.auth import PUBLIC_PATHS, scope_for
from procq.api.keys import SCOPES
from procq.api.openapi.parts import TOO_LARGE, body, error, json_reply, operation, path_param

PATHS: dict[str, Any] = {
    "/admin/keys": {
        "post": operation(
            "Create an API key (the clear key is in this answer only)",
            {"201": json_reply("The new key.", "NewApiKey"), "400": error("The name or scopes are not valid.")}
            | TOO_LARGE,
            requestBody=body("NewKeyRequest"),
        ),
        "get": operation(
            "Every API key, revoked ones too (never the keys themselves)",
            {"200": json_reply("The keys.", "KeyList")},
        ),
    },
    "/admin/keys/{key_id}": {
        "parameters": [path_param("key_id")],
        "delete": operation(
            "Revoke an API key: it fails from the next request on",
            {"204": {"description": "Revoked."}, "404": error("No key has this id.")},
        ),
    },
}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`python run.py keys create`). Required on every route but the "
        "public ones once any key exists. Scopes: " + ", ".join(SCOPES) + ".",
    }
}


def guarded(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation with what a key needs: none on a public path, else its scope and the 401/403 answers
    (an operation that documents its own 403 keeps it)."""
    if PUBLIC_PATHS.fullmatch(path):
        return {**operation, "security": []}
    scope = scope_for(method.upper(), path)
    responses = {
        "401": error("No valid API key (header WWW-Authenticate: Bearer)."),
        "403": error(f"The key lacks the scope {scope!r}."),
    } | operation["responses"]
    return {**operation, "x-scope": scope, "responses": responses}


CROSS_SITE = (
    "Refused as another web site's request: an Origin that is not this server's, Sec-Fetch-Site "
    "cross-site or same-site, or (on a server listening only on loopback) a Host that is not a loopback name."
)
NOT_JSON = (
    "The request carries a body (or a form or text/plain Content-Type) not declared 'Content-Type: application/json'."
)


def cross_site(method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation with the answers api/crosssite.py gives on every route: 403 for another site's
    request (added to a 403 the operation already documents), and 415 on every method but GET/HEAD."""
    responses = dict(operation["responses"])
    if "403" in responses:
        own = responses["403"]
        responses["403"] = {**own, "description": f"{own['description']} Or: {CROSS_SITE[0].lower()}{CROSS_SITE[1:]}"}
    else:
        responses["403"] = error(CROSS_SITE)
    if method.upper() not in ("GET", "HEAD", "OPTIONS"):
        responses.setdefault("415", error(NOT_JSON))
    return {**operation, "responses": responses}
