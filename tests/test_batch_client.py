"""Submitting many jobs from Python (Client.submit_many) and the command line (procq batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from procq.client import Client
from procq.client.errors import BadRequest
from tests.helpers import ROOT, ServerProcess, py


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def _procq(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "procq.server.console", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PROCQ_URL": server.url, "COLUMNS": "200"},
    )


def test_submit_many_returns_the_jobs_in_order_across_requests_of_a_thousand(server: ServerProcess) -> None:
    with Client(server.url) as client:
        jobs = client.submit_many([["true", str(n)] for n in range(1001)] + [{"args": ["true"], "tags": ["last"]}])
    assert [list(job.args[1:]) for job in jobs[:1001]] == [[str(n)] for n in range(1001)]
    assert list(jobs[-1].tags) == ["last"]
    assert len({job.id for job in jobs}) == 1002


def test_submit_many_names_the_bad_item_counted_from_the_callers_start(server: ServerProcess) -> None:
    items: list = [["true"]] * 1005 + [{"args": ["true"], "priority": "high"}]
    with Client(server.url) as client, pytest.raises(BadRequest, match=r"jobs\[5\]") as caught:
        client.submit_many(items[1000:])
    assert "priority" in caught.value.description
    with Client(server.url) as client, pytest.raises(BadRequest, match=r"jobs\[1005\]"):
        client.submit_many(items)


def test_procq_batch_reads_command_lines_and_json_bodies_from_stdin(server: ServerProcess) -> None:
    lines = "# a comment\n" + "echo 'one two'\n\n" + json.dumps({"args": py("print(2)"), "tags": ["json"]}) + "\n"
    done = _procq(server, "batch", "--tag", "cli", stdin=lines)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 2 and "submitted 2 jobs" in done.stderr
    first, second = (server.wait_status(job_id, "COMPLETED") for job_id in ids)
    assert first["args"] == ["echo", "one two"] and first["tags"] == ["cli"]
    assert second["tags"] == ["json", "cli"]
    assert server.get(f"/jobs/{ids[1]}/result").text == "2\n"


def test_procq_batch_names_the_line_of_a_bad_job_and_creates_none(server: ServerProcess, tmp_path) -> None:
    source = tmp_path / "jobs.txt"
    source.write_text('echo fine\n\n{"args": ["true"], "queue": 5}\n')
    done = _procq(server, "batch", str(source))
    assert done.returncode == 1 and "line 3" in done.stderr and "queue" in done.stderr
    assert server.get("/jobs").json()["jobs"] == []
