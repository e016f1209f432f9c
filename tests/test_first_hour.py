"""What a newcomer meets in the first hour, end to end against real servers: a port already taken, log
lines as JSON from the first, `run.py --help`, a bad TOML value, GET /jobs/{id}, and a rerun after a stop."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.features import create_admin_key
from tests.helpers import ROOT, ServerProcess, py, wait_until

SLEEPER = py("import time; time.sleep(60)")
MARKER = py("open('ran.txt', 'w').write('ran')")  # jobs run in their own directory


def run_py(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def test_a_port_in_use_prints_one_line_exits_1_and_runs_no_queued_job(start_server, jobs_dir: Path) -> None:
    first = start_server()
    job = first.submit(MARKER, delay_seconds=1.5)  # still queued when this server stops
    assert first.stop() == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        refused = run_py("--port", str(port), "--jobs-dir", str(jobs_dir), "--workers", "1")
        took = time.monotonic() - began
        time.sleep(2)  # past the job's run_at: a server that went on would have started it by now
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"port {port} is in use" in lines[0] and "--port" in lines[0] and "PROCQ_PORT" in lines[0]
    assert refused.stdout == ""  # it never said it was serving
    assert took < 10
    assert not (jobs_dir / job["id"] / "ran.txt").exists()
    again = start_server()  # the jobs directory's lock was released
    assert again.status(job["id"])["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    again.wait_status(job["id"], "COMPLETED")


def test_with_json_logs_every_line_is_json_including_the_first(start_server) -> None:
    server = start_server("--log-format", "json", "--log-level", "INFO")
    server.submit(py("pass"))
    assert server.stop() == 0
    stderr = [line for line in server.log().splitlines() if line.strip()]
    assert stderr, "the server logged nothing"
    for line in stderr:
        json.loads(line)  # every line, or this raises naming it
    serving = json.loads(server.banner)
    assert serving["message"].startswith("serving on http://127.0.0.1:") and serving["url"] == server.url


def test_run_py_help_groups_flags_with_a_description_each_and_names_keys() -> None:
    shown = run_py("--help")
    assert shown.returncode == 0
    text = shown.stdout
    assert "run.py keys" in text.split("\n\n", 1)[0]  # the usage names the keys subcommand
    headings = re.findall(r"^(\w[\w ]*):$", text, re.M)
    assert headings[:1] == ["options"] and {"Network", "Jobs", "Webhooks", "Security", "Logging"} <= set(headings)
    described: dict[str, str] = {}
    flag = ""
    for line in text.splitlines():
        if line.startswith("  --"):
            flag, _, rest = line.strip().partition("  ")
            described[flag.split()[0]] = rest
        elif line.startswith(" " * 24) and flag:
            described[flag.split()[0]] += " " + line.strip()
    assert len(described) >= 25
    for name, words in described.items():
        bare = re.sub(r"\[PROCQ_[^\]]*\]|\(default: [^)]*\)", "", words).strip()
        assert len(bare) > 10, f"{name} has no description: {words!r}"


def test_a_bad_toml_value_prints_one_line_naming_the_files_key(tmp_path: Path) -> None:
    config = tmp_path / "procq.toml"
    config.write_text('port = "eighty"\n')
    refused = run_py("--config", str(config), "--jobs-dir", str(tmp_path / "jobs"))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "usage:" not in refused.stderr and "argument --port" not in refused.stderr
    assert str(config) in lines[0] and "port" in lines[0] and "eighty" in lines[0]


def test_get_jobs_id_returns_the_job_like_status(server: ServerProcess) -> None:
    job = server.submit(py("pass"))
    server.wait_status(job["id"], "COMPLETED")
    plain = server.get(f"/jobs/{job['id']}")
    assert plain.status_code == 200, plain.text
    assert plain.json() == server.status(job["id"])
    missing = server.get("/jobs/" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["title"]


def test_a_job_requeued_after_a_stop_shows_no_exit_code_or_wall_time_of_the_cut_run(start_server) -> None:
    first = start_server()
    job = first.submit(SLEEPER)
    first.wait_status(job["id"], "IN_PROGRESS")
    time.sleep(0.3)
    assert first.stop() == 0
    meta = json.loads((first.jobs_dir / job["id"] / "meta.json").read_text())
    assert meta["status"] == "IN_QUEUE" and meta["interrupted"]
    assert (meta["exit_code"], meta["error"], meta["completed_at"]) == (None, None, None)
    assert not (meta.get("resources") or {}).get("wall_seconds")
    assert [run["attempt"] for run in meta["runs"]] == [1] and meta["runs"][0]["completed_at"]
    second = start_server()
    again = second.wait_status(job["id"], "IN_PROGRESS")
    assert (again["exit_code"], again["error"], again["completed_at"]) == (None, None, None)
    assert not (again.get("resources") or {}).get("wall_seconds")
    assert again["attempts"] == 2 and len(again["runs"]) == 1  # the cut run stays in runs
    second.put(f"/jobs/{job['id']}/cancel")
    wait_until(lambda: second.status(job["id"])["status"] == "CANCELED")


def test_jobs_q_finds_by_id_prefix_command_or_tag_and_stats_count_a_keys_own(start_server, jobs_dir: Path) -> None:
    admin = {"Authorization": f"Bearer {create_admin_key(jobs_dir)}"}
    server = start_server()
    made = server.post("/admin/keys", json={"name": "team", "scopes": ["jobs:submit", "jobs:read"]}, headers=admin)
    team = {"Authorization": f"Bearer {made.json()['key']}"}
    render = server.post("/jobs", json={"args": py("print('Render')"), "tags": ["video"]}, headers=admin).json()
    mine = server.post("/jobs", json={"args": py("pass")}, headers=team).json()

    def found(q: str, headers: dict[str, str]) -> list[str]:
        return [job["id"] for job in server.get("/jobs", params={"q": q}, headers=headers).json()["jobs"]]

    assert found("render", admin) == [render["id"]]  # any case
    assert found("video", admin) == [render["id"]]
    assert found(mine["id"][:20], admin) == [mine["id"]]
    assert found("render", team) == []  # search never reaches another key's jobs
    assert server.get("/jobs", params={"q": ""}, headers=admin).status_code == 400
    wait_until(lambda: server.get("/stats", headers=admin).json()["counts"]["COMPLETED"] == 2)
    assert server.get("/stats", headers=team).json()["counts"]["COMPLETED"] == 1
