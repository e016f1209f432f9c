"""Requests that other web sites make through a visitor's browser are refused: a foreign Origin or
Sec-Fetch-Site (403), a body not declared JSON (415), and a foreign Host on a loopback server (403)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from procq.api.crosssite import content_type_refusal, is_loopback_host, origin_refusal
from tests.browser import needs_browser  # browser: the shared Chromium fixture, from conftest.py
from tests.helpers import ROOT, ServerProcess, py

BODY = '{"args": ["sh", "-c", "id > proof"]}'


def _jobs(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in jobs_dir.iterdir() if not p.name.startswith("."))


@pytest.fixture
def server(start_server: Any) -> Iterator[ServerProcess]:
    server = start_server()
    yield server
    assert server.stop() == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_cors_simple_body_is_415_telling_the_user_to_send_json(server: ServerProcess, content_type: str) -> None:
    response = requests.post(server.url + "/jobs", data=BODY, headers={"Content-Type": content_type}, timeout=10)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["description"]
    assert _jobs(server.jobs_dir) == []


def test_a_body_without_a_content_type_is_415(server: ServerProcess) -> None:
    response = requests.post(server.url + "/jobs", data=BODY.encode(), timeout=10)
    assert response.status_code == 415 and "application/json" in response.json()["description"]


def test_a_foreign_origin_is_403_even_with_a_json_body(server: ServerProcess) -> None:
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        response = requests.post(
            server.url + "/jobs", data=BODY, headers={"Content-Type": "application/json", "Origin": origin}, timeout=10
        )
        assert response.status_code == 403, origin
        assert "origin" in response.json()["description"].lower()
    response = requests.post(
        server.url + "/admin/keys", json={"name": "x"}, headers={"Origin": "http://a.b"}, timeout=10
    )
    assert response.status_code == 403
    assert _jobs(server.jobs_dir) == [] and not (server.jobs_dir / ".keys.json").exists()


def test_sec_fetch_site_cross_site_is_403_on_reads_too(server: ServerProcess) -> None:
    response = requests.get(server.url + "/jobs", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert response.status_code == 403 and "Sec-Fetch-Site" in response.json()["description"]


def test_a_foreign_host_is_403_on_a_loopback_server(server: ServerProcess) -> None:
    # DNS rebinding: a name the attacker controls now points at 127.0.0.1; the browser still sends it.
    port = server.url.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
        response = requests.get(server.url + "/jobs", headers={"Host": host}, timeout=10)
        assert response.status_code == 403, host
        assert "loopback" in response.json()["description"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", f"app.localhost:{port}"):
        assert requests.get(server.url + "/jobs", headers={"Host": host}, timeout=10).status_code == 200, host


def test_its_own_origin_and_json_are_accepted(server: ServerProcess) -> None:
    port = server.url.rsplit(":", 1)[1]
    headers = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    response = requests.post(server.url + "/jobs", json={"args": py("pass")}, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    response = requests.put(f"{server.url}/jobs/{response.json()['id']}/cancel", headers=headers, timeout=30)
    assert response.status_code in (200, 409)


def test_the_pure_checks_name_what_is_wrong() -> None:
    assert is_loopback_host("localhost:8080") and is_loopback_host("[::1]:1") and is_loopback_host("127.9.9.9")
    assert not is_loopback_host("evil.example") and not is_loopback_host("10.0.0.1:80")
    assert origin_refusal("http://localhost:8080", None, "localhost:8080") is None
    assert origin_refusal(None, "none", "localhost:8080") is None
    assert origin_refusal("http://localhost:8080", None, "127.0.0.1:8080") is not None
    assert origin_refusal("http://[zz", None, "localhost") is not None
    assert content_type_refusal("GET", "text/plain", 10) is None
    assert content_type_refusal("POST", "application/json; charset=utf-8", 10) is None
    assert content_type_refusal("POST", None, None) is None  # rerun, cancel: no body at all
    assert content_type_refusal("POST", "text/plain", 0) is not None  # a form post with no fields


class _EvilPage:
    """Another web site (a second loopback port), whose page tries to submit a job to procq."""

    def __init__(self, target: str) -> None:
        page = f"""<!doctype html><body><form id=f method=post action="{target}/jobs" enctype="text/plain">
<input name='{{"args": ["sh", "-c", "echo x > proof"], "x": "' value='"}}'></form><script>
fetch("{target}/jobs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{args: ["sh", "-c", "echo y > proof"]}})}}).finally(() => {{
  document.title = "fetched"; document.getElementById("f").submit(); }});
</script></body>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@needs_browser
def test_a_page_on_another_site_cannot_submit_a_job_through_the_browser(
    server: ServerProcess,
    browser: Any,  # noqa: F811 - the fixture imported above
) -> None:
    before = _jobs(server.jobs_dir)
    evil = _EvilPage(server.url)
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(evil.url)
        tab.wait_for_url(server.url + "/jobs", timeout=10_000)  # the form post shows procq's answer
        tab.wait_for_load_state()
        assert "Cross-site request refused" in tab.content() or "Send JSON" in tab.content()
    finally:
        context.close()
        evil.close()
    assert _jobs(server.jobs_dir) == before


def test_every_curl_line_of_the_readme_that_sends_a_body_declares_json() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [
        line
        for line in text.splitlines()
        if line.lstrip().startswith("curl") and (" -d " in line or " --json " in line)
    ]
    assert commands, "the README shows how to submit with curl"
    for command in commands:  # curl's --json sends Content-Type: application/json itself
        assert "Content-Type: application/json" in command or " --json " in command, command
