"""Cluster mode end to end: three real servers (run.py --database-url, separate ports and jobs
directories) on one real PostgreSQL schema."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from procq.actors.keeper import protocol
from procq.server.flags import parse_args
from tests.helpers import ServerProcess, end_keeper, wait_until
from tests.tcpproxy import TcpProxy

LEASE_S = 4.0


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for name in ("n1", "n2", "n3"):
            started.append(_node(tmp_path, pg_url, name))
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.stop()
            end_keeper(node.jobs_dir)


def _node(tmp_path: Path, pg_url: str, name: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / name,
        "--node-name",
        name,
        "--workers",
        "2",
        "--lease",
        str(LEASE_S),
        *extra,
        env={"PROCQ_DATABASE_URL": pg_url},
    )


def test_jobs_spread_over_the_nodes_and_every_node_answers_every_jobs_status_and_result(
    nodes: list[ServerProcess],
) -> None:
    first = nodes[0]
    job = [sys.executable, "-c", "import os, time; time.sleep(3); print('ran as', os.getpid())"]
    ids = [first.submit(job)["id"] for _ in range(6)]  # 6 at once need all 3 nodes of 2 slots
    running = [first.wait_status(job_id, "IN_PROGRESS", timeout=20) for job_id in ids]
    assert {job["node"] for job in running} == {"n1", "n2", "n3"}
    for job_id in ids:
        done = nodes[2].wait_status(job_id, "COMPLETED", timeout=30)
        assert [node.status(job_id) for node in nodes] == [done, done, done]
        results = [node.get(f"/jobs/{job_id}/result") for node in nodes]
        assert [r.status_code for r in results] == [200, 200, 200]
        assert results[0].content.startswith(b"ran as ")
        assert len({r.content for r in results}) == 1
    listed = nodes[1].get("/jobs").json()["jobs"]
    assert sorted(job["id"] for job in listed) == sorted(ids)
    assert nodes[2].get("/stats").json()["counts"]["COMPLETED"] == 6


def test_every_node_lists_the_nodes_with_their_slots_and_heartbeats(nodes: list[ServerProcess]) -> None:
    answers = [node.get("/nodes") for node in nodes]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    listed = answers[1].json()["nodes"]
    assert [(n["name"], n["address"], n["slots"], n["state"]) for n in listed] == [
        (f"n{i + 1}", node.url, 2, "up") for i, node in enumerate(nodes)
    ]
    assert all(n["heartbeat_at"] and n["running"] == 0 for n in listed)


def test_a_job_is_canceled_through_a_node_that_does_not_run_it(nodes: list[ServerProcess]) -> None:
    job = nodes[0].submit(["sleep", "60"])
    running = _started(nodes[0], job["id"])
    other = next(node for i, node in enumerate(nodes) if f"n{i + 1}" != running["node"])
    answer = other.put(f"/jobs/{job['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "CANCELED"
    assert not psutil.pid_exists(running["pid"]) or psutil.Process(running["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_queued_job_is_canceled_through_any_node(nodes: list[ServerProcess]) -> None:
    job = nodes[0].submit(["true"], run_at="2999-01-01T00:00:00Z")
    answer = nodes[2].put(f"/jobs/{job['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert nodes[1].status(job["id"])["status"] == "CANCELED"


def test_a_killed_nodes_job_runs_again_on_another_node_within_the_lease_and_two_seconds(
    nodes: list[ServerProcess],
) -> None:
    job = nodes[0].submit(["sleep", "60"], max_attempts=2)
    running = _started(nodes[0], job["id"])
    victim = nodes[int(running["node"][1:]) - 1]
    survivor = next(node for node in nodes if node is not victim)
    keeper = json.loads((victim.jobs_dir / protocol.INFO).read_text())["pid"]
    # the machine is gone: its server, its keeper and the job's process
    killed_at = time.monotonic()
    victim.proc.kill()
    for pid in (keeper, running["pid"]):
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    again = wait_until(
        lambda: (j := survivor.status(job["id"]))["status"] == "IN_PROGRESS" and j["node"] != running["node"] and j,
        timeout=LEASE_S + 2,
        interval=0.1,
    )
    assert time.monotonic() - killed_at <= LEASE_S + 2
    assert again["attempts"] == 2
    assert "node " + running["node"] in again["interrupted"]
    victim.wait(10)


def test_a_queue_limit_set_through_one_node_holds_on_every_node(nodes: list[ServerProcess]) -> None:
    answer = nodes[1].put("/queues/render", json={"parallelism": 1})
    assert answer.status_code == 200, answer.text
    ids = [nodes[0].submit(["sleep", "1"], queue="render")["id"] for _ in range(3)]
    most = 0
    while not all(nodes[2].status(job_id)["status"] == "COMPLETED" for job_id in ids):
        running = [q for q in nodes[2].get("/queues").json()["queues"] if q["name"] == "render"][0]["running"]
        most = max(most, running)
        time.sleep(0.05)
    assert most == 1
    assert [q["parallelism"] for q in nodes[0].get("/queues").json()["queues"] if q["name"] == "render"] == [1]


def test_the_dependents_of_a_failed_job_fail_wherever_they_were_submitted(nodes: list[ServerProcess]) -> None:
    first = nodes[0].submit([sys.executable, "-c", "import sys, time; time.sleep(1); sys.exit(1)"])
    second = nodes[1].submit(["true"], after=[first["id"]])
    third = nodes[2].submit(["true"], after=[second["id"]])
    assert nodes[2].wait_status(first["id"], "FAILED", timeout=20)["exit_code"] == 1
    for job, dependency in ((second, first), (third, second)):
        failed = nodes[0].wait_status(job["id"], "FAILED", timeout=10)
        assert failed["attempts"] == 0
        assert f"dependency {dependency['id']} ended FAILED" in failed["error"]


def test_a_partitioned_node_stops_its_job_before_another_node_runs_it(tmp_path: Path, pg_url: str) -> None:
    proxy = TcpProxy(5432)
    # --grace 30 and a job that ignores SIGTERM: the fence ends it within its own shorter grace
    cut_off = _node(tmp_path, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), "cut", "--grace", "30")
    other: ServerProcess | None = None
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    try:
        job = cut_off.submit([sys.executable, "-c", stubborn], max_attempts=2)
        running = _started(cut_off, job["id"])
        other = _node(tmp_path, pg_url, "other")
        proxy.cut()
        ended_at: list[float] = []

        def rerun_elsewhere() -> dict | None:
            if not ended_at and not _alive(running["pid"]):
                ended_at.append(time.monotonic())
            job_now = other.status(job["id"])
            return job_now if job_now["status"] == "IN_PROGRESS" and job_now["node"] == "other" else None

        again = wait_until(rerun_elsewhere, timeout=LEASE_S + 5, interval=0.05)
        assert ended_at, "the cut-off node's job was still running when another node took it"
        assert again["attempts"] == 2
    finally:
        proxy.close()
        for node in (cut_off, other):
            if node is not None:
                node.proc.kill()
                node.wait(10)
                end_keeper(node.jobs_dir)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cluster_flags_are_checked_at_start(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://procq@127.0.0.1:5432/procq\n")
    args = parse_args(["--database-url-file", str(secret), "--node-name", "gpu-1"])
    assert (args.database_url, args.node_name, args.cluster_output_cap) == (
        "postgresql://procq@127.0.0.1:5432/procq",
        "gpu-1",
        8 << 20,
    )
    assert parse_args([]).database_url is None
    for bad in (
        ["--node-name", "gpu-1"],
        ["--database-url", "mysql://x"],
        ["--database-url", "postgresql://x", "--lease", "1"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def _started(node: ServerProcess, job_id: str) -> dict:
    """The job once its process is running (a claimed job shows IN_PROGRESS before it has a pid)."""
    return wait_until(lambda: (job := node.status(job_id))["pid"] is not None and job, timeout=20)
