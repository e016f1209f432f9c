"""Safe defaults and limits against a real server: the host refusal, --allow-command, what a child
sees, request limits, --max-queued, and paths that try to leave the jobs directory."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from procq.actors.errors import VariableNotAllowed
from procq.api.app import create_app
from procq.api.commands import CommandPolicy
from tests.helpers import ROOT, py, wait_until
from tests.secure_helpers import bearer, is_json_error, make_key


def run_server(jobs_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--jobs-dir", str(jobs_dir), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_a_non_loopback_host_without_keys_refuses_to_start_and_says_how_to_fix_it(jobs_dir: Path) -> None:
    refused = run_server(jobs_dir, "--host", "0.0.0.0")
    assert refused.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in refused.stderr
    assert "keys" in refused.stderr and "create" in refused.stderr and "--insecure-no-auth" in refused.stderr
    assert refused.stdout == ""  # it never served


def test_insecure_no_auth_starts_loudly_and_a_key_lets_it_start(jobs_dir: Path, start_server: Any) -> None:
    server = start_server("--host", "0.0.0.0", "--insecure-no-auth")
    assert "INSECURE" in server.log()
    assert server.stop() == 0
    make_key(jobs_dir, "admin")
    server = start_server("--host", "0.0.0.0")
    assert server.get("/health").status_code == 200
    assert server.stop() == 0


def test_allow_command_admits_only_the_listed_executables(tmp_path: Path, start_server: Any) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "pq-tool"
    other = bin_dir / "pq-other"
    try:
        tool.symlink_to(sys.executable)
        other.symlink_to(Path(sys.executable).parent / "definitely-missing")
    except OSError:
        pytest.skip("symlinks are not allowed here")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = start_server("--allow-command", "pq-tool", env=env)
    job = server.submit(["pq-tool", "-c", "print('ran')"])  # by name, resolved on PATH as the server would
    assert job["args"] == [str(tool), "-c", "print('ran')"]  # and run as exactly the file that was checked
    assert server.wait_status(job["id"], "COMPLETED")["status"] == "COMPLETED"
    assert server.get(f"/jobs/{job['id']}/result").text == "ran\n"
    assert server.post("/jobs", json={"args": [str(tool), "-c", "pass"]}).status_code == 201  # same file
    for refused in (["sh", "-c", "id"], ["./pq-tool"], [str(other)], ["pq-tool/../pq-tool"]):
        response = server.post("/jobs", json={"args": refused})
        assert response.status_code == 403 and is_json_error(response), refused
        assert repr(refused[0]) in response.json()["description"] and "pq-tool" in response.json()["description"]


def test_the_child_runs_in_its_job_directory_without_the_servers_secrets(jobs_dir: Path, start_server: Any) -> None:
    _, key = make_key(jobs_dir, "admin")
    env = {"PROCQ_WEBHOOK_SECRET": "s3cret-value", "PROCQ_KEYS_FILE": str(jobs_dir / ".keys.json")}
    server = start_server(env=env)
    code = "import json, os; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
    job = server.post("/jobs", json={"args": py(code)}, headers=bearer(key)).json()
    wait_until(lambda: server.get(f"/jobs/{job['id']}/status", headers=bearer(key)).json()["status"] == "COMPLETED")
    seen = server.get(f"/jobs/{job['id']}/result", headers=bearer(key)).json()
    assert Path(seen["cwd"]).resolve() == (jobs_dir / job["id"]).resolve()
    # none of the server's settings; only the run marker every job process carries
    assert [name for name in seen["env"] if name.upper().startswith("PROCQ_")] == ["PROCQ_RUN"]
    assert "s3cret-value" not in json.dumps(seen["env"]) and key not in json.dumps(seen["env"])


def test_oversize_inputs_get_clear_errors_and_store_nothing(jobs_dir: Path, start_server: Any) -> None:
    server = start_server("--max-body-bytes", "300000")
    cases = [
        ({"args": ["x"] * 5000}, 400, "args has 5000 items; at most 4096"),
        ({"args": ["echo", "y" * 200_000]}, 400, "args[1] has 200000 characters; at most 131072"),
        ({"args": ["echo"], "webhook": "http://h/" + "z" * 3000}, 400, "at most 2048 characters"),
        ({"args": ["echo"], "tags": [f"t{i}" for i in range(17)]}, 400, "tags has 17 items; at most 16"),
        ({"args": ["echo", "y" * 400_000]}, 413, "at most 300000 bytes"),
    ]
    for body, status, words in cases:
        response = server.post("/jobs", json=body)
        assert response.status_code == status and is_json_error(response), body.keys()
        assert words in response.json()["description"]
        assert len(response.content) < 500  # the error never echoes the oversize value
    assert [p.name for p in jobs_dir.iterdir() if not p.name.startswith(".")] == []


def test_max_queued_answers_429_with_retry_after(start_server: Any) -> None:
    server = start_server("--workers", "1", "--max-queued", "2")
    sleeper = py("import time; time.sleep(30)")
    running = server.submit(sleeper)
    server.wait_status(running["id"], "IN_PROGRESS")
    queued = [server.submit(sleeper), server.submit(sleeper)]
    full = server.post("/jobs", json={"args": sleeper})
    assert full.status_code == 429 and is_json_error(full)
    assert int(full.headers["Retry-After"]) > 0 and "2 jobs are already waiting" in full.json()["description"]
    assert server.put(f"/jobs/{queued[0]['id']}/cancel").status_code == 200
    assert server.post("/jobs", json={"args": sleeper}).status_code == 201  # room again at once


def _raw(server: Any, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """Send the path exactly as written: requests would normalise '..' away."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_paths_cannot_leave_the_jobs_directory(tmp_path: Path, jobs_dir: Path, start_server: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (jobs_dir / "CON").mkdir()  # not a job id: never looked up, even if it exists
    server = start_server()
    job = server.submit(py("print('mine')"))
    server.wait_status(job["id"], "COMPLETED")
    before = sorted(p.name for p in jobs_dir.iterdir())
    attempts = [
        "/jobs/../../secret.txt/result",
        "/jobs/..%2F..%2Fsecret.txt/result",
        "/jobs/%2e%2e/result",
        f"/jobs/{job['id']}%2F..%2F..%2Fsecret.txt/result",
        f"/jobs/{job['id'].upper()}/status",
        "/jobs/CON/status",
        "/jobs/nul.txt/status",
        f"/jobs/{job['id']}/../../secret.txt",
    ]
    for path in attempts:
        for method in ("GET", "PUT"):
            status, body = _raw(server, method, path)
            assert status in (404, 405) and set(body) == {"title", "description"}, (method, path, status)
            assert "TOP-SECRET-CONTENT" not in json.dumps(body)
    assert sorted(p.name for p in jobs_dir.iterdir()) == before


def test_a_symlink_planted_in_the_jobs_directory_is_not_followed(
    tmp_path: Path, jobs_dir: Path, start_server: Any
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    server = start_server()
    job = server.submit(py("print('mine')"))
    server.wait_status(job["id"], "COMPLETED")
    stdout = jobs_dir / job["id"] / "stdout.txt"
    stdout.unlink()
    try:
        stdout.symlink_to(secret)
    except OSError:
        pytest.skip("symlinks are not allowed here")
    response = server.get(f"/jobs/{job['id']}/result")
    assert response.status_code == 409 and is_json_error(response)
    assert "TOP-SECRET-CONTENT" not in response.text
    # The same through a symlinked job directory.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stdout.txt").write_text("TOP-SECRET-CONTENT")
    job_dir = jobs_dir / job["id"]
    job_dir.rename(tmp_path / "moved")
    job_dir.symlink_to(outside, target_is_directory=True)
    response = server.get(f"/jobs/{job['id']}/result")
    assert response.status_code == 409 and "TOP-SECRET-CONTENT" not in response.text
    assert secret.read_text() == "TOP-SECRET-CONTENT"


def test_with_an_allow_list_a_job_cannot_set_variables_that_inject_code() -> None:
    policy = CommandPolicy([sys.executable], allowed_env=["RENDER_*", "*PATH*", "PYTHON*", "*"])
    assert policy.check((sys.executable, "-V"), ["RENDER_QUALITY"])[0] == sys.executable
    for name in ("LD_PRELOAD", "PATH", "PYTHONSTARTUP", "NODE_OPTIONS", "BASH_ENV", "dyld_insert_libraries"):
        with pytest.raises(VariableNotAllowed) as refused:
            policy.check((sys.executable, "-V"), [name])
        assert repr(name) in str(refused.value)
    assert CommandPolicy([]).check(("anything",), ["LD_PRELOAD"]) == ("anything",)  # no list: no check


def test_a_variable_refused_by_the_allow_list_is_a_403_that_names_it(tmp_path: Path) -> None:
    app = create_app(None, tmp_path, commands=CommandPolicy([sys.executable]))
    body = {"args": [sys.executable, "-V"], "env": {"LD_PRELOAD": "/tmp/x.so"}}
    response = falcon.testing.TestClient(app).simulate_post("/jobs", json=body)
    assert response.status_code == 403
    assert response.json["title"] == "Environment variable not allowed"
    assert "'LD_PRELOAD'" in response.json["description"]
