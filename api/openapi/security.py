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
