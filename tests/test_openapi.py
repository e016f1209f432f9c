"""The OpenAPI document covers every route, shares the validation schemas, and real responses match it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon.inspect
import jsonschema
import referencing
import requests
from referencing.jsonschema import DRAFT202012

from procq.api import schema
from procq.api.app import create_app
from procq.api.openapi import build_openapi as document
from tests.helpers import py

JSON = {"Content-Type": "application/json"}

METHODS = {"get", "put", "post", "delete", "patch"}


def test_every_route_and_method_is_documented(tmp_path: Path) -> None:
    app = create_app(None, tmp_path)
    served = {
        (route.path, method.method.lower())
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal and method.method.lower() in METHODS
    }
    doc = document()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}
    assert served == documented
    assert doc["openapi"].startswith("3.1")
    for path, item in doc["paths"].items():
        for method in METHODS & set(item):
            responses = item[method]["responses"]
            assert "default" in responses, (path, method)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    shown = response["content"]["application/json"]["schema"]
                    error = {"$ref": "#/components/schemas/Error"}
                    assert shown == error or error in shown["allOf"], (path, method, code)


def test_the_document_shows_the_schemas_that_validate_requests() -> None:
    doc = document()
    assert doc["components"]["schemas"]["SubmitRequest"] == schema.SUBMIT
    listed = {p["name"]: p for p in doc["paths"]["/jobs"]["get"]["parameters"]}
    assert listed["limit"]["schema"]["maximum"] == schema.QUERY["limit"]["maximum"] == 500
    assert listed["status"]["schema"]["items"] == schema.QUERY["status"]["items"]
    jsonschema.Draft202012Validator.check_schema(schema.SUBMIT)
    for parameter in schema.QUERY.values():
        jsonschema.Draft202012Validator.check_schema(parameter)


class Contract:
    """Checks real responses against the document served by the same server."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.doc = server.get("/openapi.json").json()
        resource = referencing.Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = referencing.Registry().with_resource("urn:procq", resource)
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, template: str, method: str, response: requests.Response) -> Any:
        code = str(response.status_code)
        responses = self.doc["paths"][template][method]["responses"]
        assert code in responses, f"{method.upper()} {template} answered {code}, which is not documented"
        content = responses[code].get("content", {})
        if "application/json" in content:
            assert response.headers["Content-Type"].startswith("application/json")
            pointer = "/".join(["#/paths", template.replace("/", "~1"), method, "responses", code, "content"])
            ref = {"$ref": f"urn:procq{pointer}/application~1json/schema"}
            validator = jsonschema.Draft202012Validator(ref, registry=self.registry)
            validator.validate(response.json())
        else:
            assert not response.content or content, f"{method.upper()} {template} {code} has an undocumented body"
        self.checked.add((template, method, response.status_code))
        return response


def test_real_responses_match_the_document(start_server) -> None:
    server = start_server("--workers", "1")
    c = Contract(server)
    url = server.url
    job = c.check("/jobs", "post", server.post("/jobs", json={"args": py("print(1)"), "tags": ["a"]})).json()
    c.check("/jobs", "post", server.post("/jobs", json={"args": []}))
    c.check("/jobs", "post", server.post("/jobs", data=b"x" * ((1 << 20) + 1000), headers=JSON))
    server.wait_status(job["id"], "COMPLETED")
    slow = server.submit(py("import time; time.sleep(30)"))
    server.wait_status(slow["id"], "IN_PROGRESS")
    c.check("/jobs", "get", server.get("/jobs?limit=1"))
    c.check("/jobs", "get", server.get("/jobs?limit=x"))
    c.check("/jobs/{job_id}/status", "get", server.get(f"/jobs/{job['id']}/status"))
    c.check("/jobs/{job_id}/status", "get", server.get("/jobs/nope/status"))
    c.check("/jobs/{job_id}/result", "get", server.get(f"/jobs/{job['id']}/result"))
    c.check("/jobs/{job_id}/result", "get", server.get(f"/jobs/{slow['id']}/result"))
    c.check("/jobs/{job_id}/logs", "get", server.get(f"/jobs/{job['id']}/logs?stream=stdout"))
    c.check("/jobs/{job_id}/logs", "get", server.get(f"/jobs/{job['id']}/logs?offset=-5"))
    c.check("/jobs/{job_id}/logs", "get", server.get(f"/jobs/{job['id']}/logs?follow=1"))
    c.check("/jobs/{job_id}", "delete", requests.delete(f"{url}/jobs/{slow['id']}", timeout=10))
    c.check("/jobs/{job_id}/cancel", "put", server.put(f"/jobs/{slow['id']}/cancel"))
    c.check("/jobs/{job_id}/cancel", "put", server.put(f"/jobs/{slow['id']}/cancel"))
    c.check("/jobs/{job_id}", "delete", requests.delete(f"{url}/jobs/{job['id']}", timeout=10))
    c.check("/jobs/{job_id}", "delete", requests.delete(f"{url}/jobs/{job['id']}", timeout=10))
    c.check("/stats", "get", server.get("/stats"))
    c.check("/health", "get", server.get("/health"))
    c.check("/metrics", "get", server.get("/metrics"))
    c.check("/openapi.json", "get", server.get("/openapi.json"))
    with requests.get(f"{url}/events", stream=True, timeout=10) as events:
        assert events.status_code == 200 and events.headers["Content-Type"].startswith("text/event-stream")
    assert {code for _, _, code in c.checked} >= {200, 201, 204, 400, 404, 409, 413}
    assert server.stop() == 0


def test_every_operation_documents_the_cross_site_403_and_every_write_the_415() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method in METHODS & set(item):
            responses = item[method]["responses"]
            assert "another web site" in responses["403"]["description"].lower(), (path, method)
            assert ("415" in responses) == (method not in ("get", "head")), (path, method)
            if "415" in responses:
                assert "application/json" in responses["415"]["description"], (path, method)
