"""The procq command line through its real entry point (`python -m client`, what the console script
calls) against a real server: output for people and for scripts, exit codes, Ctrl+C while waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.features import create_admin_key
from tests.helpers import ROOT, ServerProcess, py, wait_until


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def procq(server: ServerProcess | None, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI to completion; the server URL comes from PROCQ_URL, as a user would set it."""
    environment = {**os.environ, "COLUMNS": "200", **env}
    if server is not None:
        environment.setdefault("PROCQ_URL", server.url)
    return subprocess.run(
        [sys.executable, "-m", "procq.server.console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=environment,
    )


def test_the_console_script_is_the_cli_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"procq": "procq.server.console:main"}
    assert "client.cli import main" in (ROOT / "client" / "__main__.py").read_text()


def test_submit_prints_the_id_and_status_shows_the_job(server: ServerProcess) -> None:
    done = procq(server, "submit", "--tag", "cli", "--", *py("print('hello')"))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert len(job_id) == 32 and "submitted job" in done.stderr
    server.wait_status(job_id, "COMPLETED")
    shown = procq(server, "status", job_id)
    assert shown.returncode == 0
    assert "COMPLETED" in shown.stdout and "print('hello')" in shown.stdout and "cli" in shown.stdout
    as_json = json.loads(procq(server, "status", "--json", job_id).stdout)
    assert (as_json["id"], as_json["status"], as_json["exit_code"]) == (job_id, "COMPLETED", 0)


def test_submit_wait_prints_the_result_and_exits_zero(server: ServerProcess) -> None:
    done = procq(server, "submit", "--wait", "--", *py("print(6 * 7)"))
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr


def test_submit_wait_exits_with_the_jobs_exit_code_and_shows_its_stderr(server: ServerProcess) -> None:
    code = "import sys; print('bad input', file=sys.stderr); sys.exit(3)"
    done = procq(server, "submit", "--wait", "--", *py(code))
    assert done.returncode == 3
    assert done.stdout == ""
    assert "bad input" in done.stderr and "FAILED" in done.stderr and "exit code 3" in done.stderr


def test_submit_wait_on_a_command_that_cannot_start_exits_127(server: ServerProcess) -> None:
    done = procq(server, "submit", "-w", "--", "procq-no-such-command-here")
    assert done.returncode == 127 and "FAILED" in done.stderr


def test_options_after_the_command_belong_to_the_command(server: ServerProcess) -> None:
    done = procq(server, "submit", "--wait", *py("import sys; print(sys.argv[1:])"), "--wait", "-p", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['--wait', '-p', '3']\n"


def test_submit_follow_streams_stderr_then_prints_the_result(server: ServerProcess) -> None:
    code = "import sys, time\nfor i in range(3):\n    print(f'step {i}', file=sys.stderr, flush=True); time.sleep(0.3)\nprint('ok')"
    done = procq(server, "submit", "--follow", "--", *py(code))
    assert done.returncode == 0, done.stderr
    assert "step 0\nstep 1\nstep 2\n" in done.stderr
    assert done.stdout == "ok\n"


def test_submit_json_prints_the_job_object(server: ServerProcess) -> None:
    done = procq(server, "submit", "--json", "--wait", "--", *py("pass"))
    job = json.loads(done.stdout)
    assert done.returncode == 0 and job["status"] == "COMPLETED" and job["args"] == py("pass")


def test_result_writes_to_a_file_and_logs_prints_stderr(server: ServerProcess, tmp_path: Path) -> None:
    code = "import sys; print('log line', file=sys.stderr); sys.stdout.write('x' * 100000)"
    job_id = procq(server, "submit", "--", *py(code)).stdout.strip()
    server.wait_status(job_id, "COMPLETED")
    target = tmp_path / "result.txt"
    done = procq(server, "result", job_id, "-o", str(target))
    assert done.returncode == 0 and target.read_text() == "x" * 100000
    assert procq(server, "result", job_id).stdout == "x" * 100000
    assert procq(server, "logs", job_id).stdout == "log line\n"
    assert procq(server, "logs", "-f", job_id).stdout == "log line\n"  # a finished job: follow ends at once


def test_ls_shows_a_table_with_state_words_and_filters(server: ServerProcess) -> None:
    ok = procq(server, "submit", "-w", "--", *py("pass"))
    bad = procq(server, "submit", "-w", "-t", "nightly", "--", *py("raise SystemExit(1)"))
    assert (ok.returncode, bad.returncode) == (0, 1)
    table = procq(server, "ls")
    assert table.returncode == 0
    assert "STATE" in table.stdout and "COMPLETED" in table.stdout and "FAILED" in table.stdout
    failed = procq(server, "ls", "--status", "failed")
    assert "FAILED" in failed.stdout and "COMPLETED" not in failed.stdout
    tagged = json.loads(procq(server, "ls", "--tag", "nightly", "--json").stdout)
    assert [job["status"] for job in tagged] == ["FAILED"]


def test_cancel_and_rm(server: ServerProcess) -> None:
    job_id = procq(server, "submit", "--", *py("import time; time.sleep(60)")).stdout.strip()
    server.wait_status(job_id, "IN_PROGRESS")
    refused = procq(server, "rm", job_id)
    assert refused.returncode == 1 and "409" in refused.stderr
    canceled = procq(server, "cancel", job_id)
    assert canceled.returncode == 0 and "CANCELED" in canceled.stderr
    assert procq(server, "rm", job_id).returncode == 0
    gone = procq(server, "status", job_id)
    assert gone.returncode == 1 and "404" in gone.stderr and job_id in gone.stderr


def test_url_option_beats_the_environment_and_errors_are_one_line(server: ServerProcess) -> None:
    done = procq(None, "--url", server.url, "ls", PROCQ_URL="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    unreachable = procq(None, "ls", PROCQ_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "no answer from http://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, which Windows delivers differently")
def test_ctrl_c_while_waiting_cancels_the_job_when_asked_to(server: ServerProcess) -> None:
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "procq.server.console",
            "submit",
            "--wait",
            "--cancel-on-interrupt",
            "--",
            *py("import time; time.sleep(60)"),
        ],
        cwd=ROOT,
        env={**os.environ, "PROCQ_URL": server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_until(lambda: [j for j in _jobs(server) if j["status"] == "IN_PROGRESS"], timeout=15)
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, stderr
    assert server.status(running[0]["id"])["status"] == "CANCELED"
    assert "CANCELED" in stderr


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, which Windows delivers differently")
def test_ctrl_c_without_a_terminal_leaves_the_job_running(server: ServerProcess) -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "procq.server.console", "submit", "--wait", "--", *py("import time; time.sleep(60)")],
        cwd=ROOT,
        env={**os.environ, "PROCQ_URL": server.url},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_until(lambda: [j for j in _jobs(server) if j["status"] == "IN_PROGRESS"], timeout=15)
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130
    assert "keeps running" in stderr and server.status(running[0]["id"])["status"] == "IN_PROGRESS"
    server.put(f"/jobs/{running[0]['id']}/cancel")


@pytest.mark.skipif(sys.platform == "win32", reason="a clean stop needs CTRL_BREAK and a process group of its own")
def test_serve_starts_the_server_with_run_py_flags(tmp_path: Path) -> None:
    jobs = tmp_path / "served"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "procq.server.console",
            "serve",
            "--port",
            "0",
            "--jobs-dir",
            str(jobs),
            "--workers",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "procq serving on http://127.0.0.1:" in line
        url = line.split()[3]
        done = procq(None, "submit", "--wait", "--", *py("print('served')"), PROCQ_URL=url)
        assert (done.returncode, done.stdout) == (0, "served\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _jobs(server: ServerProcess) -> list[dict]:
    return server.get("/jobs").json()["jobs"]


def test_keys_create_list_and_revoke_over_the_api(start_server, jobs_dir: Path) -> None:
    admin_key = create_admin_key(jobs_dir)
    server = start_server()
    refused = procq(server, "ls")
    assert refused.returncode == 1 and "401" in refused.stderr
    made = procq(server, "keys", "create", "ci", "--scope", "jobs:read", PROCQ_KEY=admin_key)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert "shown only now" in made.stderr and secret
    listed = procq(server, "keys", "list", PROCQ_KEY=admin_key)
    assert "ci" in listed.stdout and "jobs:read" in listed.stdout and secret not in listed.stdout
    key_id = next(
        k["id"]
        for k in json.loads(procq(server, "keys", "list", "--json", PROCQ_KEY=admin_key).stdout)
        if k["name"] == "ci"
    )
    assert procq(server, "--key", secret, "ls").returncode == 0
    forbidden = procq(server, "--key", secret, "submit", "--", *py("pass"))
    assert forbidden.returncode == 1 and "403" in forbidden.stderr
    assert procq(server, "keys", "revoke", key_id, PROCQ_KEY=admin_key).returncode == 0
    assert "401" in procq(server, "--key", secret, "ls").stderr
