"""Claims in cluster mode, through real nodes: they never hold up the node's API (a claim waits on
the database on the claimer's thread, not the Dispatcher's)."""

from __future__ import annotations

import json
import sys
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
        # the retention sweep (1 s after start, then every few seconds) reads the database on its
        # timer's thread, the claims on the claimer's: neither holds up the Dispatcher
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        node = _node(tmp_path, url, "cut", "--retention", "30")
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


# Prints the GPU variable it sees, then waits for its gate file.
GPU_JOB = """
import json, os, sys, time
print(json.dumps(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
end = time.time() + 60
while not os.path.exists(sys.argv[1]) and time.time() < end:
    time.sleep(0.02)
"""


def test_claimed_jobs_get_concrete_gpus_on_the_node_that_fits_them(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    two = _node(tmp_path, pg_url, "two", "--gpus", "0,1", "--workers", "4")
    one = _node(tmp_path, pg_url, "one", "--gpus", "0", "--workers", "4")
    started += [two, one]
    gates = tmp_path / "gates"
    gates.mkdir()

    def submit(name: str, gpus: int) -> str:
        job = two.submit([sys.executable, "-c", GPU_JOB, str(gates / name)], requires={"gpus": gpus})
        return job["id"]

    def running(job_id: str) -> dict:
        return wait_until(lambda: (j := one.status(job_id))["pid"] is not None and j, timeout=20)

    try:
        big = running(submit("big", 2))  # only node "two" has two GPUs
        assert (big["node"], big["assigned"]) == ("two", {"gpus": ["0", "1"]})
        small = running(submit("small", 1))  # node "two" has none free now: node "one" takes it
        assert (small["node"], small["assigned"]) == ("one", {"gpus": ["0"]})
        waiting = submit("waiting", 1)  # no node has a free GPU: it waits
        time.sleep(1.5)  # a few claim polls
        assert one.status(waiting)["status"] == "IN_QUEUE"
        (gates / "big").touch()
        third = running(waiting)
        assert (third["node"], third["assigned"]) == ("two", {"gpus": ["0"]})
    finally:
        for name in ("big", "small", "waiting"):
            (gates / name).touch()
    for job in (big, small, third):
        done = two.wait_status(job["id"], "COMPLETED", timeout=20)
        assert done["assigned"] == job["assigned"]
        seen = json.loads(one.get(f"/jobs/{job['id']}/result").text)
        assert seen == ",".join(job["assigned"]["gpus"])
