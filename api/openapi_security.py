"""The security part of the OpenAPI document: the Bearer scheme, 401/403 on every guarded route, the
job's owner, the limits' answers, and /admin/keys."""

from __future__ import annotations

from typing import Any

from procq.api.admin import NEW_KEY
from procq.api.auth import PUBLIC_PATHS, scope_for
from procq.api.keys import SCOPES

_JSON = "application/json"
_ERROR = {"$ref": "#/components/schemas/Error"}
_TIME = {"type": ["string", "null"], "format": "date-time"}

_KEY = {
    "type": "object",
    "required": ["id", "name", "scopes", "created_at", "revoked_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
        "created_at": {"type": "string", "format": "date-time"},
        "revoked_at": _TIME,
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ERROR}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _admin_paths() -> dict[str, Any]:
    default = {"default": _error("Any other error: always JSON {title, description}.")}
    return {
        "/admin/keys": {
            "post": {
                "summary": "Create an API key (the clear key is in this answer only)",
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("NewKeyRequest")}}},
                "responses": {
                    "201": {"description": "The new key.", "content": {_JSON: {"schema": _ref("NewApiKey")}}},
                    "400": _error("The name or scopes are not valid."),
                    "413": _error("The body is over the limit (--max-body-bytes)."),
                }
                | default,
            },
            "get": {
                "summary": "Every API key, revoked ones too (never the keys themselves)",
                "responses": {"200": {"description": "The keys.", "content": {_JSON: {"schema": _ref("KeyList")}}}}
                | default,
            },
        },
        "/admin/keys/{key_id}": {
            "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {
                "summary": "Revoke an API key: it fails from the next request on",
                "responses": {"204": {"description": "Revoked."}, "404": _error("No key has this id.")} | default,
            },
        },
    }


def add_security(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the security parts to the document built by api/openapi.py; returns it."""
    schemas = doc["components"]["schemas"]
    schemas["NewKeyRequest"] = NEW_KEY
    schemas["ApiKey"] = _KEY
    schemas["NewApiKey"] = {
        "allOf": [_ref("ApiKey")],
        "type": "object",
        "required": ["key"],
        "properties": {"key": {"type": "string", "description": "The clear key; shown this once."}},
    }
    schemas["KeyList"] = {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": _ref("ApiKey")}},
    }
    schemas["Job"]["properties"]["owner"] = {
        "type": ["string", "null"],
        "description": "The id of the API key that submitted the job; null when no keys were in use.",
    }
    doc["paths"].update(_admin_paths())
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`python run.py keys create`). Required on every route but the "
            "public ones once any key exists. Scopes: " + ", ".join(SCOPES) + ".",
        }
    }
    doc["security"] = [{"bearer": []}]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if PUBLIC_PATHS.fullmatch(path):
                operation["security"] = []
                continue
            scope = scope_for(method.upper(), path)
            operation["x-scope"] = scope
            responses = operation["responses"]
            responses.setdefault("401", _error("No valid API key (header WWW-Authenticate: Bearer)."))
            responses.setdefault("403", _error(f"The key lacks the scope {scope!r}."))
    submit = doc["paths"]["/jobs"]["post"]["responses"]
    submit["403"] = _error("The key lacks the scope 'jobs:submit', or the command is not allowed (--allow-command).")
    submit["429"] = {
        **_error("Too many jobs wait already (--max-queued); retry after Retry-After seconds."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    return doc
