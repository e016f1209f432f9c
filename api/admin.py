"""/admin/keys: create, list and revoke API keys over HTTP (the admin scope is checked by api/auth.py)."""

from __future__ import annotations

import falcon

from procq.actors.errors import KeyNotFound
from procq.api.keys import KEY_ID, KeyStore, check_name, check_scopes, lockout_risk
from procq.api.parse import read_json


class KeysResource:
    """POST|GET /admin/keys and DELETE /admin/keys/{key_id}. Runs on waitress threads."""

    def __init__(self, keys: KeyStore, max_body_bytes: int) -> None:
        self._keys = keys
        self._max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Checked field by field rather than with schema.NEW_KEY, so the answer names what is wrong.
        data = read_json(req, self._max_body_bytes)
        if not isinstance(data, dict):
            raise _invalid('The body must be a JSON object such as {"name": "ci", "scopes": ["jobs:read"]}')
        unknown = sorted(set(data) - {"name", "scopes"})
        if unknown:
            raise _invalid(f"Unknown field {unknown[0]!r}; the fields are: name, scopes")
        try:
            name, scopes = check_name(data.get("name")), check_scopes(data.get("scopes"))
        except ValueError as exc:
            raise _invalid(str(exc)) from exc
        risk = lockout_risk(self._keys, scopes)
        if risk:
            raise falcon.HTTPConflict(title="The first key needs the admin scope", description=f"Refused: {risk}.")
        key, clear = self._keys.create(name, scopes)
        resp.status = falcon.HTTP_201
        resp.location = f"/admin/keys/{key.id}"
        resp.media = {**key.public(), "key": clear}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": [key.public() for key in self._keys.list()]}

    def on_delete_key(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        if not KEY_ID.fullmatch(key_id):
            raise KeyNotFound(key_id)
        self._keys.revoke(key_id)  # KeyNotFound for an unknown id
        resp.status = falcon.HTTP_204


def _invalid(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid key request", description=description)
