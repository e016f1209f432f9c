"""The OpenAPI 3.1 document of the whole HTTP API, assembled by content (jobs, watching, queues, security) from
the same schema objects that validate requests, and GET /openapi.json that serves it."""

from __future__ import annotations

import copy
import json
from typing import Any

import falcon

from procq.api.openapi import components, jobs, queues, security, watching

GROUPS = (jobs.PATHS, watching.PATHS, queues.PATHS, security.PATHS)


def build_openapi() -> dict[str, Any]:
    """The document, freshly built: callers may change it. Every operation gets its scope and
    401/403 answers (none on a public path), and the cross-site 403 and 415 of api/crosssite.py."""
    paths: dict[str, Any] = {}
    for group in GROUPS:
        for path, item in group.items():
            paths[path] = {
                method: value if method == "parameters" else _complete(path, method, value)
                for method, value in item.items()
            }
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "procq",
                "version": "1",
                "description": "A job server that runs every job as its own OS process.",
            },
            "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {"schemas": components.SCHEMAS, "securitySchemes": security.SECURITY_SCHEMES},
        }
    )


def _complete(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """What every operation shares: its key's scope and 401/403, and the cross-site 403 and 415."""
    return security.cross_site(method, security.guarded(path, method, operation))


class OpenAPIResource:
    """GET /openapi.json: the document, built once when the app is made."""

    def __init__(self) -> None:
        self._body = json.dumps(build_openapi(), indent=1).encode("utf-8")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body
