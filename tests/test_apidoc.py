"""docs/api.md, the API reference the README links to, is the served OpenAPI document written out: it is
regenerated from a real server's GET /openapi.json here and must match what is committed."""

from __future__ import annotations

import subprocess
import sys

from procq.api.apidoc import render
from tests.helpers import ROOT, ServerProcess

DOC = ROOT / "docs" / "api.md"


def test_docs_api_md_is_the_served_openapi_document_written_out(start_server) -> None:
    server: ServerProcess = start_server()
    written = subprocess.run(
        [sys.executable, "-m", "procq.api.apidoc", server.url], capture_output=True, text=True, timeout=60
    )
    assert written.returncode == 0, written.stderr
    assert written.stdout == render(server.get("/openapi.json").json())
    assert DOC.read_text() == written.stdout, (
        "docs/api.md is out of date: start a server and run  python -m procq.api.apidoc URL > docs/api.md"
    )


def test_the_reference_lists_every_route_of_the_document(start_server) -> None:
    spec = start_server().get("/openapi.json").json()
    text = DOC.read_text()
    for path, item in spec["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "delete"):
                assert f"### {method.upper()} {path}\n" in text, (method, path)
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in text
