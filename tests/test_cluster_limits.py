"""Cluster mode end to end: --max-queued counts the whole cluster's queued jobs, and retention deletes
finished jobs cluster-wide, each row by the node that holds its files (or any node once that node is
gone), each directory by the node that holds it; real servers on one real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, end_keeper, py, wait_until

LATER = "2999-01-01T00:00:00Z"  # queued until then: never claimed during the test


@pytest.fixture
def start(tmp_path: Path, pg_url: str) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def node(name: str, *flags: str) -> ServerProcess:
        server = ServerProcess(
            tmp_path / name, "--node-name", name, "--lease", "4", *flags, env={"PROCQ_DATABASE_URL": pg_url}
        )
        started.append(server)
        return server

    yield node
    for server in started:
        if server.proc.poll() is None:
            server.stop()
    for directory in {server.jobs_dir for server in started}:
        end_keeper(directory)


def test_max_queued_counts_the_queued_jobs_of_every_node(start: Callable[..., ServerProcess]) -> None:
    n1, n2 = start("n1", "--max-queued", "3"), start("n2", "--max-queued", "3")
    first = [n1.submit(["true"], run_at=LATER) for _ in range(2)]
    n2.submit(["true"], run_at=LATER)
    for node in (n1, n2):
        full = node.post("/jobs", json={"args": ["true"], "run_at": LATER})
        assert full.status_code == 429, full.text
        assert full.headers["Retry-After"]
    batch = n2.post("/jobs/batch", json={"jobs": [{"args": ["true"]}]})
    assert batch.status_code == 429
    assert n1.put(f"/jobs/{first[0]['id']}/cancel").status_code == 200  # one place frees, on any node
    assert n2.post("/jobs", json={"args": ["true"], "run_at": LATER}).status_code == 201
    assert n1.post("/jobs", json={"args": ["true"], "run_at": LATER}).status_code == 429


def _gone(node: ServerProcess, job_id: str) -> bool:
    return node.get(f"/jobs/{job_id}/status").status_code == 404


def test_a_node_deletes_the_finished_rows_it_holds_the_files_of_and_those_of_a_node_that_left(
    start: Callable[..., ServerProcess],
) -> None:
    n1 = start("n1", "--retention", "1", "--resource", "mine=1")
    n2 = start("n2", "--retention", "600", "--resource", "theirs=1")  # keeps its jobs ten minutes
    ours = n1.submit(py("print('n1')"), requires={"mine": 1})
    theirs = n2.submit(py("print('n2')"), requires={"theirs": 1})
    assert n1.wait_status(ours["id"], "COMPLETED", timeout=20)["node"] == "n1"
    assert n2.wait_status(theirs["id"], "COMPLETED", timeout=20)["node"] == "n2"
    wait_until(lambda: _gone(n2, ours["id"]), timeout=10)  # n1 deleted its own job's row...
    wait_until(lambda: not (n1.jobs_dir / ours["id"]).exists(), timeout=10)  # ...and its directory
    wait_until(lambda: n1.get("/stats").json()["counts"]["COMPLETED"] == 1, timeout=5)
    # n1 has swept several times since (every 0.5 s): n2's job, older than n1's retention, stays while n2 is up
    assert n1.status(theirs["id"])["status"] == "COMPLETED"
    assert (n2.jobs_dir / theirs["id"] / "stdout.txt").read_bytes() == b"n2\n"

    assert n2.stop() == 0  # n2 left: its finished rows are anyone's to delete (its output is kept in the database)
    wait_until(lambda: _gone(n1, theirs["id"]), timeout=10)
    assert (n2.jobs_dir / theirs["id"]).exists()  # n2 is away: its directory waits for it
    back = start("n2", "--retention", "600", "--resource", "theirs=1")
    wait_until(lambda: not (back.jobs_dir / theirs["id"]).exists(), timeout=15)  # its start removes it


def test_each_node_removes_its_own_directories_of_jobs_another_node_deleted(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    n1 = start("n1", "--retention", "1", "--workers", "1")
    n2 = start("n2", "--retention", "1", "--workers", "1")
    gate = tmp_path / "go"
    blocker = n2.submit(py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"))
    holder = n2.wait_status(blocker["id"], "IN_PROGRESS", timeout=20)["node"]
    busy, free = (n1, n2) if holder == "n1" else (n2, n1)
    # submitted through the busy node, run by the free one: both hold a directory of it
    job = busy.submit(py("print('elsewhere')"))
    assert busy.wait_status(job["id"], "COMPLETED", timeout=20)["node"] == free.jobs_dir.name
    assert (busy.jobs_dir / job["id"]).is_dir() and (free.jobs_dir / job["id"]).is_dir()
    wait_until(lambda: _gone(busy, job["id"]), timeout=10)
    wait_until(lambda: not (free.jobs_dir / job["id"]).exists(), timeout=10)
    wait_until(lambda: not (busy.jobs_dir / job["id"]).exists(), timeout=10)
    gate.touch()
