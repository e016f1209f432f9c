"""/admin/keys: create, list and revoke API keys over HTTP (the admin scope is checked by api/auth.py)."""

from __future__ import annotations

from typing import Any

import falcon
from procq.api.keys import KEY_ID, KeyNotFound, KeyStore, check_name, check_scopes, lockout_risk
from procq.api.schema import read_json

NEW_KEY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "scopes"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,64}$"},
        "scopes": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": ["jobs:submit", "jobs:read", "jobs:cancel", "admin"]},
        },
    },
}


class KeysResource:
    """POST|GET /admin/keys and DELETE /admin/keys/{key_id}. Runs on waitress threads."""

    def __init__(self, keys: KeyStore, max_body_bytes: int) -> None:
        self._keys = keys
        self._max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        data = read_json(req, self._max_body_bytes)
        if not isinstance(data, dict):
            raise _invalid('The body must be a JSON object such as {"name": "ci", "scopes": ["jobs:read"]}')
        unknown = sorted(set(data) - {"name", "scopes"})
        if unknown:
            raise _invalid(f"Unknown field {unknown[0]!r}; the fields are: name, scopes")
        try:
            scopes = check_scopes(data.get("scopes"))
        except ValueError as exc:
            raise _invalid(str(exc)) from exc
        risk = lockout_risk(self._keys, scopes)
        if risk:
            raise falcon.HTTPConflict(title="The first key needs the admin scope", description=f"Refused: {risk}.")
        try:
            key, clear = self._keys.create(check_name(data.get("name")), scopes)
        except ValueError as exc:
            raise _invalid(str(exc)) from exc
        resp.status = falcon.HTTP_201
        resp.location = f"/admin/keys/{key.id}"
        resp.media = {**key.public(), "key": clear}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": [key.public() for key in self._keys.list()]}

    def on_delete_key(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        if not KEY_ID.fullmatch(key_id):
            raise _not_found(key_id)
        try:
            self._keys.revoke(key_id)
        except KeyNotFound as exc:
            raise _not_found(key_id) from exc
        resp.status = falcon.HTTP_204


def _invalid(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid key request", description=description)


def _not_found(key_id: str) -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Unknown key", description=f"There is no API key with id {key_id!r}.")
