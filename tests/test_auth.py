"""API keys against a real server: every route without a key, with a wrong key and with each scope;
revocation from the CLI and over HTTP; job ownership; the keys file never holds a clear key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procq.actors import osdeps
from procq.actors.errors import KeyFileError
from procq.api.app import create_app
from procq.api.keys import KeyStore, hash_key
from tests.helpers import ROOT, py
from tests.secure_helpers import (
    SCOPES,
    bearer,
    expected_scope,
    is_json_error,
    make_key,
    routes_from_app,
    routes_from_openapi,
)

WRONG_KEY = "pq_" + "A" * 43


def run_keys(jobs_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "run.py"), "keys", "--jobs-dir", str(jobs_dir), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_without_any_key_the_local_server_needs_none(start_server: Any) -> None:
    server = start_server()
    job = server.submit(py("pass"))
    assert job["owner"] is None
    assert server.get(f"/jobs/{job['id']}/status").status_code == 200


def test_health_never_needs_a_key(jobs_dir: Path, start_server: Any) -> None:
    make_key(jobs_dir, "admin")
    server = start_server()
    assert server.get("/health").status_code == 200


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([^}]*)\}", lambda m: values.get(m.group(1), "default"), template)


def _body(method: str, template: str) -> dict[str, Any] | None:
    bodies = {
        ("POST", "/jobs"): {"args": py("pass")},
        ("POST", "/admin/keys"): {"name": "walk", "scopes": ["jobs:read"]},
        ("PUT", "/queues/{}"): {"paused": False},
    }
    route = re.sub(r"\{[^}]*\}", "{}", template)
    return bodies.get((method, route), {} if method in ("POST", "PUT") else None)


def test_every_route_needs_a_valid_key_with_the_right_scope(jobs_dir: Path, start_server: Any) -> None:
    _, admin = make_key(jobs_dir, "admin", name="admin")
    single = {scope: make_key(jobs_dir, scope, name=scope.replace(":", "-"))[1] for scope in SCOPES}
    server = start_server()
    job = server.post("/jobs", json={"args": py("pass")}, headers=bearer(admin)).json()
    openapi = server.get("/openapi.json", headers=bearer(admin))
    if openapi.status_code == 200:
        routes = routes_from_openapi(openapi.json())
    else:  # no OpenAPI document served: read the routes from the app itself
        routes = routes_from_app(create_app(None, jobs_dir, keys=KeyStore(jobs_dir / ".keys.json")))
    assert ("POST", "/jobs") in routes and ("DELETE", "/admin/keys/{key_id}") in routes

    def call(method: str, template: str, headers: dict[str, str]) -> Any:
        values = {"job_id": job["id"], "id": job["id"], "key_id": make_key(jobs_dir, "jobs:read", name="victim")[0]}
        values["name"] = "app.js"  # /ui/{name}: a dashboard file
        path = _fill(template, values)
        return server.http.request(
            method, server.url + path, json=_body(method, template), headers=headers, timeout=30, stream=True
        )

    checked = 0
    for method, template in routes:
        scope = expected_scope(method, template)
        for label, headers in [
            ("no key", {}),
            ("wrong key", bearer(WRONG_KEY)),
            ("basic auth", {"Authorization": "Basic eDp5"}),
        ]:
            response = call(method, template, headers)
            if scope is None:
                assert response.status_code not in (401, 403) and response.status_code < 500, (method, template)
                continue
            assert response.status_code == 401, (method, template, label, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, template)
            assert is_json_error(response)
        for key_scope, key in single.items():
            response = call(method, template, bearer(key))
            allowed = scope is None or key_scope in (scope, "admin")
            if allowed:
                assert response.status_code not in (401, 403) and response.status_code < 500, (
                    method,
                    template,
                    key_scope,
                    response.status_code,
                    response.text[:300],
                )
            else:
                assert response.status_code == 403, (method, template, key_scope, response.status_code)
                assert is_json_error(response) and scope in response.json()["description"]
            response.close()
            checked += 1
    assert checked >= 8 * len(SCOPES)


def test_a_key_revoked_from_the_command_line_fails_on_the_next_request(jobs_dir: Path, start_server: Any) -> None:
    key_id, key = make_key(jobs_dir, "jobs:read")
    server = start_server()
    assert server.get("/jobs/" + "0" * 32 + "/status", headers=bearer(key)).status_code == 404
    revoked = run_keys(jobs_dir, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    response = server.get("/jobs/" + "0" * 32 + "/status", headers=bearer(key))
    assert response.status_code == 401 and is_json_error(response)


def test_keys_created_on_the_command_line_work_and_are_stored_hashed(jobs_dir: Path, start_server: Any) -> None:
    server = start_server()
    assert server.post("/jobs", json={"args": py("pass")}).status_code == 201  # no key yet: open
    created = run_keys(jobs_dir, "create", "--name", "ci", "--scopes", "jobs:submit,jobs:read", "--yes")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("pq_")
    stored = (jobs_dir / ".keys.json").read_text()
    assert key not in stored and hash_key(key) in stored
    # The running server sees the new key at once: from now on a key is required.
    assert server.post("/jobs", json={"args": py("pass")}).status_code == 401
    assert server.post("/jobs", json={"args": py("pass")}, headers=bearer(key)).status_code == 201
    listed = run_keys(jobs_dir, "list")
    assert "ci" in listed.stdout and "jobs:submit,jobs:read" in listed.stdout and key not in listed.stdout
    bad = run_keys(jobs_dir, "create", "--name", "x", "--scopes", "root")
    assert bad.returncode == 2 and "'root' is not a scope" in bad.stderr


def test_admins_manage_keys_over_http_and_a_revoked_key_fails_at_once(jobs_dir: Path, start_server: Any) -> None:
    _, admin = make_key(jobs_dir, "admin")
    server = start_server()
    created = server.post("/admin/keys", json={"name": "ci", "scopes": ["jobs:read"]}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "scopes", "created_at", "revoked_at", "key"}
    assert (body["name"], body["scopes"]) == ("ci", ["jobs:read"])
    listed = server.get("/admin/keys", headers=bearer(admin)).json()["keys"]
    assert body["id"] in [k["id"] for k in listed]
    assert all("key" not in k and "sha256" not in k for k in listed)  # the clear key is shown once only
    assert server.get("/jobs/" + "0" * 32 + "/status", headers=bearer(body["key"])).status_code == 404
    assert server.http.delete(f"{server.url}/admin/keys/{body['id']}", headers=bearer(admin)).status_code == 204
    assert server.get("/jobs/" + "0" * 32 + "/status", headers=bearer(body["key"])).status_code == 401
    revoked = [k for k in server.get("/admin/keys", headers=bearer(admin)).json()["keys"] if k["id"] == body["id"]]
    assert revoked[0]["revoked_at"] is not None
    for bad in ({"name": "ci"}, {"name": "ci", "scopes": ["root"]}, {"name": "a b", "scopes": ["admin"]}, []):
        response = server.post("/admin/keys", json=bad, headers=bearer(admin))
        assert response.status_code == 400 and is_json_error(response), bad
    missing = server.http.delete(f"{server.url}/admin/keys/{'f' * 16}", headers=bearer(admin))
    assert missing.status_code == 404 and is_json_error(missing)


def test_a_key_sees_and_cancels_only_its_own_jobs(jobs_dir: Path, start_server: Any) -> None:
    scopes = ("jobs:submit", "jobs:read", "jobs:cancel")
    alice_id, alice = make_key(jobs_dir, *scopes, name="alice")
    _, bob = make_key(jobs_dir, *scopes, name="bob")
    _, admin = make_key(jobs_dir, "admin", name="admin")
    server = start_server()
    job = server.post("/jobs", json={"args": py("import time; time.sleep(30)")}, headers=bearer(alice)).json()
    assert job["owner"] == alice_id
    for method, action in (
        ("GET", "/status"),
        ("GET", "/result"),
        ("GET", "/logs"),
        ("PUT", "/cancel"),
        ("DELETE", ""),
    ):
        response = server.http.request(method, f"{server.url}/jobs/{job['id']}{action}", headers=bearer(bob))
        assert response.status_code == 404 and is_json_error(response), action
        assert job["id"] in response.json()["description"]
    listed = {
        name: server.get("/jobs", headers=bearer(k)).json()["jobs"] for name, k in (("alice", alice), ("bob", bob))
    }
    assert [j["id"] for j in listed["alice"]] == [job["id"]] and listed["bob"] == []
    assert job["id"] in [j["id"] for j in server.get("/jobs", headers=bearer(admin)).json()["jobs"]]
    assert server.get(f"/jobs/{job['id']}/status", headers=bearer(admin)).json()["status"] in (
        "IN_QUEUE",
        "IN_PROGRESS",
    )
    canceled = server.put(f"/jobs/{job['id']}/cancel", headers=bearer(alice))
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"


def test_revoking_every_key_keeps_auth_required_and_a_broken_file_fails_closed(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    assert not store.required
    key, clear = store.create("only", ("admin",))
    assert store.authenticate(clear) == key
    assert store.authenticate(clear + "x") is None
    store.revoke(key.id)
    assert store.required and store.authenticate(clear) is None
    live, live_clear = store.create("live", ("jobs:read",))
    assert store.authenticate(live_clear) == live
    (tmp_path / "keys.json").write_text("{not json")
    assert store.required and store.authenticate(live_clear) is None  # fails closed while serving
    with pytest.raises(KeyFileError):
        KeyStore(tmp_path / "keys.json")  # and refuses to start
    assert list(tmp_path.glob("*.tmp")) == []
    (tmp_path / "keys.json").unlink()
    assert store.required and store.authenticate(live_clear) is None  # a deleted file does not open it


def test_the_keys_file_is_private_to_the_servers_user(tmp_path: Path) -> None:
    if osdeps.WINDOWS:
        pytest.skip("file modes do not apply on Windows; the directory's ACL does")
    store = KeyStore(tmp_path / "keys.json")
    store.create("ci", ("jobs:read",))
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    assert json.loads((tmp_path / "keys.json").read_text())["version"] == 1


def test_the_keys_command_reads_the_servers_config_file(tmp_path: Path, jobs_dir: Path) -> None:
    config = tmp_path / "procq.toml"
    config.write_text(f"jobs_dir = {json.dumps(str(jobs_dir))}\n", encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "run.py"), "keys", "--config", str(config), "create", "--name", "ops"]
    created = subprocess.run([*cmd, "--scopes", "admin"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert [key.name for key in KeyStore(jobs_dir / ".keys.json").list()] == ["ops"]


def test_the_keys_commands_options_may_also_follow_the_subcommand(tmp_path: Path, jobs_dir: Path) -> None:
    keys = [sys.executable, str(ROOT / "run.py"), "keys"]
    late = [*keys, "create", "--name", "late", "--scopes", "admin", "--jobs-dir", str(jobs_dir)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    created = subprocess.run(late, capture_output=True, text=True, timeout=30, cwd=elsewhere)
    assert created.returncode == 0, created.stderr
    assert [key.name for key in KeyStore(jobs_dir / ".keys.json").list()] == ["late"]
    assert not (elsewhere / "jobs").exists()  # not the default jobs directory
    listed = subprocess.run([*keys, "list", "--jobs-dir", str(jobs_dir)], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "late" in listed.stdout
