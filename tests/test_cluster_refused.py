"""A node cut off from the database past its lease, then reconnected: another node ran its job again
meanwhile, so the cut node's end of its run is refused (the lease moved on). It lets the job go: frees
its slot and forgets the job without concluding it; the job ends as the rerun ended it, one webhook."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Receiver, ServerProcess, end_keeper, py, wait_until
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


def _node(tmp_path: Path, url: str, name: str) -> ServerProcess:
    args = ("--node-name", name, "--workers", "1", "--lease", str(LEASE_S))
    return ServerProcess(tmp_path / name, *args, env={"PROCQ_DATABASE_URL": url})


def test_a_node_whose_run_was_taken_over_lets_the_job_go_once_reconnected(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    proxy = TcpProxy(5432)
    receiver = Receiver()
    try:
        cut = _node(tmp_path, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), "cut")
        started.append(cut)
        marker = tmp_path / "first-run"
        # the first run (on the cut node) waits for good; the rerun elsewhere completes at once
        code = f"import os, time, pathlib; p = pathlib.Path({str(marker)!r})\nif not p.exists():\n"
        code += "    p.touch(); time.sleep(120)\nprint('rerun')"
        job = cut.submit(py(code), max_attempts=3, webhook=receiver.url)
        wait_until(lambda: cut.status(job["id"])["status"] == "IN_PROGRESS" and marker.exists(), timeout=20)
        other = _node(tmp_path, pg_url, "other")
        started.append(other)
        proxy.cut()
        done = other.wait_status(job["id"], "COMPLETED", timeout=LEASE_S + 15)
        assert (done["node"], done["attempts"]) == ("other", 2)
        assert len(receiver.wait_for(1, timeout=15)) == 1
        proxy.heal()

        # the cut node's end of run 1 is refused once it reaches the database again: it lets the job go
        wait_until(lambda: "let go" in cut.log(), timeout=LEASE_S + 20)
        stats = wait_until(lambda: (s := cut.get("/stats").json())["workers"]["busy"] == 0 and s, timeout=10)
        assert stats["workers"]["busy"] == 0
        node_rows = {n["name"]: n for n in cut.get("/nodes").json()["nodes"]}
        assert node_rows["cut"]["running"] == 0

        # its slot takes a new job (the other node stops taking any, so the job can only run here)
        assert other.stop() == 0
        fresh = cut.submit([sys.executable, "-c", "print('fresh')"])
        ran = cut.wait_status(fresh["id"], "COMPLETED", timeout=20)
        assert ran["node"] == "cut"

        final = cut.status(job["id"])
        assert (final["status"], final["node"], final["attempts"], final["exit_code"]) == ("COMPLETED", "other", 2, 0)
        assert cut.get(f"/jobs/{job['id']}/result").text == "rerun\n"
        assert len(receiver.deliveries) == 1 and receiver.deliveries[0]["status"] == "COMPLETED"
        assert cut.log().count("let go") == 1
        assert "could not record its end" not in cut.log().split("let go")[1]
    finally:
        proxy.close()
        receiver.close()
