"""The keeper in cluster mode: it is fenced by its node's lease too. A node's server SIGKILLed while
its keeper lives: the keeper ends the job before another node may rerun it (never two runs at once);
`--on-stop keep` and a restart within the lease: the job stays on its node and is re-adopted."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procq.actors import osdeps
from procq.actors.keeper import records
from tests.helpers import ServerProcess, end_keeper, wait_until

LEASE_S = 4.0

# Appends "<pid> <time>" to a file every 20 ms for a minute; ignores SIGTERM (only SIGKILL ends it).
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
end = time.time() + 60
while time.time() < end:
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()} {time.time():.6f}\\n")
    time.sleep(0.02)
"""

# Notes its pid, waits for the test's go-ahead file, then exits 3.
WAITS = """
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
end = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < end:
    time.sleep(0.02)
print("done", flush=True)
sys.exit(3)
"""


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """The servers a test starts (appended to); all ended, keepers too, at the end."""
    servers: list[ServerProcess] = []
    try:
        yield servers
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.wait(10)
        for jobs_dir in {server.jobs_dir for server in servers}:
            end_keeper(jobs_dir)


def _node(tmp_path: Path, pg_url: str, name: str, *extra: str, lease: float = LEASE_S) -> ServerProcess:
    args = ("--node-name", name, "--workers", "2", "--lease", str(lease), *extra)
    return ServerProcess(tmp_path / name, *args, env={"PROCQ_DATABASE_URL": pg_url})


def _spans(path: Path) -> dict[int, tuple[float, float]]:
    """Each run's first and last line: pid -> (first time, last time)."""
    spans: dict[int, tuple[float, float]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # a line being written as the run was killed
        pid, at = int(parts[0]), float(parts[1])
        first, last = spans.get(pid, (at, at))
        spans[pid] = (min(first, at), max(last, at))
    return spans


def test_a_node_whose_server_alone_is_killed_has_its_job_ended_by_its_keeper_before_another_node_reruns_it(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    # --grace 30: the fence must not wait that long for a job that ignores SIGTERM
    started += [_node(tmp_path, pg_url, name, "--grace", "30") for name in ("k1", "k2")]
    trace = tmp_path / "trace.txt"
    job = started[0].submit([sys.executable, "-c", STUBBORN, str(trace)], max_attempts=2)
    running = wait_until(lambda: (j := started[0].status(job["id"]))["pid"] is not None and j, timeout=20)
    victim, survivor = (started[0], started[1]) if running["node"] == "k1" else (started[1], started[0])
    wait_until(lambda: trace.exists(), timeout=10)
    killed_at = time.monotonic()
    victim.kill()  # the server only: its keeper and the job's process live on
    again = wait_until(
        lambda: (j := survivor.status(job["id"]))["node"] == survivor.jobs_dir.name and j["pid"] is not None and j,
        timeout=LEASE_S + 2,
        interval=0.05,
    )
    assert time.monotonic() - killed_at <= LEASE_S + 2
    assert again["status"] == "IN_PROGRESS" and again["attempts"] == 2
    wait_until(lambda: len(_spans(trace)) == 2 and again["pid"] in _spans(trace), timeout=10)
    spans = _spans(trace)
    first, second = spans[running["pid"]], spans[again["pid"]]
    assert first[1] < second[0], f"two runs at once: {spans}"
    record = records.read(victim.jobs_dir / job["id"], 1)
    assert record is not None and record["stopped"] == "fenced" and record["signal"] == 9


def test_on_stop_keep_and_a_restart_within_the_lease_keep_the_job_on_its_node(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    pids, go = tmp_path / "pids.txt", tmp_path / "go"
    first = _node(tmp_path, pg_url, "a", "--on-stop", "keep", lease=20)
    started.append(first)
    job = first.submit([sys.executable, "-c", WAITS, str(pids), str(go)])
    running = wait_until(lambda: (j := first.status(job["id"]))["pid"] is not None and j, timeout=20)
    started.append(_node(tmp_path, pg_url, "b", lease=20))  # a node that would take the job, were it let go
    assert first.stop() == 0
    again = _node(tmp_path, pg_url, "a", "--on-stop", "keep", lease=20)
    started.append(again)
    adopted = again.status(job["id"])
    assert (adopted["status"], adopted["node"], adopted["pid"], adopted["attempts"]) == (
        "IN_PROGRESS",
        "a",
        running["pid"],
        1,
    )
    go.touch()
    done = started[1].wait_status(job["id"], "FAILED", timeout=20)
    assert (done["exit_code"], done["attempts"], done["node"]) == (3, 1, "a")
    assert pids.read_text().split() == [str(running["pid"])]
    assert (again.jobs_dir / job["id"] / "stdout.txt").read_bytes() == b"done\n"
    assert json.loads((again.jobs_dir / job["id"] / records.EXIT_RECORD).read_text())["stopped"] is None


def test_a_fenced_run_gets_grace_but_at_most_half_the_fencing_margin() -> None:
    from procq.actors.cluster.node import fence_grace

    assert fence_grace(30.0, 6.0) == 1.0  # margin min(2, 6 / 3) = 2 s: SIGKILL 1 s after SIGTERM
    assert fence_grace(30.0, 3.0) == 0.5
    assert fence_grace(0.2, 6.0) == 0.2  # a shorter --grace holds


@pytest.mark.skipif(osdeps.WINDOWS, reason="POSIX signals: a job object ends a tree at once")
def test_a_fenced_keeper_ends_every_run_past_the_deadline_and_a_lifted_fence_ends_none(tmp_path: Path) -> None:
    from procq.actors.keeper.client import KeeperClient

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    ids = [f"{n:032x}" for n in (1, 2)]
    for job_id in ids:
        (jobs / job_id).mkdir()
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ]
    client = KeeperClient.ensure(jobs)
    try:
        client.fence(None, 0.0)  # lifted: what a single machine's server sends
        kept = client.spawn(ids[0], 1, ["sleep", "60"], {})
        client.fence(0.5, 0.2)  # the lease holds half a second more; a run ignoring SIGTERM is killed 0.2 s later
        client.spawn(ids[1], 1, stubborn, {})
        ended = [wait_until(lambda job_id=job_id: records.read(jobs / job_id, 1), timeout=10) for job_id in ids]
        assert [(record["stopped"], record["signal"]) for record in ended] == [("fenced", 15), ("fenced", 9)]
        assert ended[0]["pid"] == kept["pid"]
        late = client.spawn(ids[0], 2, ["sleep", "60"], {})  # started past the deadline: ended too
        assert wait_until(lambda: records.read(jobs / ids[0], 2), timeout=10)["stopped"] == "fenced"
        client.fence(None, 0.0)
        again = client.spawn(ids[0], 3, ["sleep", "60"], {})
        time.sleep(0.5)  # ten fence checks
        assert [run["pid"] for run in client.runs()] == [again["pid"]] and late["pid"] != again["pid"]
    finally:
        client.close()
        end_keeper(jobs)


def test_a_node_restarted_after_its_keeper_fenced_the_run_queues_the_job_again(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    solo = _node(tmp_path, pg_url, "solo")  # alone: no other node sweeps its lapsed lease meanwhile
    started.append(solo)
    job = solo.submit(["sleep", "60"], max_attempts=2)
    running = wait_until(lambda: (j := solo.status(job["id"]))["pid"] is not None and j, timeout=20)
    solo.kill()
    fenced = wait_until(lambda: records.read(solo.jobs_dir / job["id"], 1), timeout=LEASE_S + 5)
    assert (fenced["pid"], fenced["stopped"]) == (running["pid"], "fenced")
    again = _node(tmp_path, pg_url, "solo")
    started.append(again)
    rerun = wait_until(lambda: (j := again.status(job["id"]))["attempts"] == 2 and j["pid"] is not None and j, 20)
    assert rerun["status"] == "IN_PROGRESS" and rerun["pid"] != running["pid"]
    assert rerun["runs"][0]["exit_code"] == -15 and "fence" in rerun["runs"][0]["error"]
