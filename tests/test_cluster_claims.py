"""Claims in cluster mode, through real nodes: they never hold up the node's API (a claim waits on
the database on the claimer's thread, not the Dispatcher's)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, end_keeper, wait_until
from tests.tcpproxy import TcpProxy

LEASE_S = 4.0


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        yield servers
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.wait(10)
            end_keeper(server.jobs_dir)


def _node(tmp_path: Path, pg_url: str, name: str, *extra: str) -> ServerProcess:
    args = ("--node-name", name, "--workers", "2", "--lease", str(LEASE_S), *extra)
    return ServerProcess(tmp_path / name, *args, env={"PROCQ_DATABASE_URL": pg_url})


def test_a_node_cut_off_from_the_database_answers_about_its_own_jobs_and_its_health_meanwhile(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    proxy = TcpProxy(5432)
    try:
        # --retention 0: the retention sweep (1 s after start) still reads the database on the
        # Dispatcher's thread (README, "Cluster mode": not done yet); this test is about claims
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        node = _node(tmp_path, url, "cut", "--retention", "0")
        started.append(node)
        job = node.submit(["sleep", "60"])
        wait_until(lambda: node.status(job["id"])["pid"] is not None, timeout=20)
        proxy.cut()  # a slot is free: the node keeps claiming, and each claim waits on the cut network
        answers = []
        until = time.monotonic() + LEASE_S
        while time.monotonic() < until:  # through the fence too (lease - margin after the last renewal)
            health = node.get("/health").json()
            answers.append((health["checks"]["dispatcher"], node.get(f"/jobs/{job['id']}").status_code))
            time.sleep(0.1)
        # the Dispatcher answers within /health's 2 s every time: no claim holds its thread
        assert len(answers) >= 5 and set(answers) == {("ok", 200)}, answers
    finally:
        proxy.close()
