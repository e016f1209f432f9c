"""Cluster mode end to end: a job's result and logs through any node (relayed to the node that holds
its files, or read from the copy kept in the database once it finished), with real servers on one
real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, end_keeper, kill_machine, py, wait_until
from tests.secure_helpers import bearer, make_key
from tests.sse import open_stream

# prints to both streams slowly (with a character of several bytes), then waits for the test's go
SLOW = """
import os, sys, time
for i in range(5):
    print(f"out {i} \\u00e9t\\u00e9", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
    time.sleep(0.1)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("done", flush=True)
"""


def _node(tmp_path: Path, pg_url: str, name: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / name,
        "--node-name",
        name,
        "--workers",
        "1",
        "--lease",
        "4",
        *extra,
        env={"PROCQ_DATABASE_URL": pg_url},
    )


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    extra = getattr(request, "param", ())
    started: list[ServerProcess] = []
    try:
        for name in ("n1", "n2", "n3"):
            started.append(_node(tmp_path, pg_url, name, *extra))
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.stop()
            end_keeper(node.jobs_dir)


def _owner(nodes: list[ServerProcess], job: dict) -> ServerProcess:
    return next(node for node in nodes if node.jobs_dir.name == job["node"])


def _logs(node: ServerProcess, job_id: str, stream: str, offset: int = 0) -> tuple[int, bytes, str]:
    answer = node.get(f"/jobs/{job_id}/logs", params={"stream": stream, "offset": offset})
    return answer.status_code, answer.content, answer.headers.get("X-Next-Offset", "")


def _followed(
    node: ServerProcess, job_id: str, stream: str, then: Callable[[], object] = lambda: None
) -> tuple[str, dict]:
    """The text of every log event and the end event's job; `then` is called after the first event."""
    reader = open_stream(f"{node.url}/jobs/{job_id}/logs?stream={stream}&follow=true")
    text = ""
    try:
        while (event := reader.next()) is not None:
            if event["event"] == "end":
                return text, event["data"]
            if not text:
                then()
            text += event["data"]
    finally:
        reader.close()
    raise AssertionError("the stream ended without its end event")


def test_every_node_serves_the_same_bytes_of_a_running_and_a_finished_jobs_logs(
    cluster: list[ServerProcess], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    job = cluster[0].submit(py(SLOW) + [str(go)])
    running = cluster[0].wait_status(job["id"], "IN_PROGRESS", timeout=20)
    owner = _owner(cluster, running)
    wait_until(lambda: b"err 4" in _logs(owner, job["id"], "stderr")[1], timeout=15)
    for stream in ("stdout", "stderr"):
        for offset in (0, 3):
            answers = [_logs(node, job["id"], stream, offset) for node in cluster]
            assert answers == [answers[0]] * 3, stream
            assert answers[0][0] == 200
    assert _logs(cluster[1], job["id"], "stderr")[1] == b"".join(b"err %d\n" % i for i in range(5))

    # a follower on a node that does not run it sees the whole output as it comes, then the end
    follower = next(node for node in cluster if node is not owner)
    text, end = _followed(follower, job["id"], "stdout", then=go.touch)  # relayed while it runs
    assert end["status"] == "COMPLETED"
    on_disk = (owner.jobs_dir / job["id"] / "stdout.txt").read_bytes()
    assert text.encode() == on_disk and on_disk.endswith(b"done\n")

    for stream in ("stdout", "stderr"):
        answers = [_logs(node, job["id"], stream) for node in cluster]
        assert answers == [(200, (owner.jobs_dir / job["id"] / f"{stream}.txt").read_bytes(), answers[0][2])] * 3
    assert {node.get(f"/jobs/{job['id']}/result").content for node in cluster} == {on_disk}

    # the node that ran it is gone: its finished output is still served, from the database
    kill_machine(owner)
    survivors = [node for node in cluster if node is not owner]
    for node in survivors:
        assert _logs(node, job["id"], "stdout") == (200, on_disk, str(len(on_disk)))
        assert _logs(node, job["id"], "stdout", 7) == (200, on_disk[7:], str(len(on_disk)))
        assert node.get(f"/jobs/{job['id']}/result").content == on_disk
        assert _followed(node, job["id"], "stdout")[0].encode() == on_disk


@pytest.mark.parametrize("cluster", [("--cluster-output-cap", "8")], indirect=True)
def test_output_beyond_the_cap_is_relayed_while_its_node_is_up_then_a_503_names_the_node(
    cluster: list[ServerProcess], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    go.touch()
    finished = cluster[0].submit(py(SLOW) + [str(go)])
    done = cluster[0].wait_status(finished["id"], "COMPLETED", timeout=20)
    owner = _owner(cluster, done)
    on_disk = (owner.jobs_dir / finished["id"] / "stdout.txt").read_bytes()
    assert len(on_disk) > 8
    assert [node.get(f"/jobs/{finished['id']}/result").content for node in cluster] == [on_disk] * 3
    go.unlink()
    slow = owner.submit(py(SLOW) + [str(go)])
    running = wait_until(lambda: (j := owner.status(slow["id"]))["status"] == "IN_PROGRESS" and j, timeout=20)
    holder = _owner(cluster, running)

    kill_machine(owner)
    if holder is not owner:
        kill_machine(holder)
    others = [node for node in cluster if node not in (owner, holder)]
    for node in others:
        answer = node.get(f"/jobs/{finished['id']}/result")
        assert answer.status_code == 503, answer.text
        assert f"node {owner.jobs_dir.name}" in answer.json()["description"]
        logs = node.get(f"/jobs/{finished['id']}/logs", params={"stream": "stdout"})
        assert logs.status_code == 503 and f"node {owner.jobs_dir.name}" in logs.json()["description"]
        # a job still running on a node that is gone (until the sweep settles it)
        answer = node.get(f"/jobs/{slow['id']}/logs")
        assert answer.status_code in (200, 503)
        if answer.status_code == 503:
            assert f"node {holder.jobs_dir.name}" in answer.json()["description"]


def test_a_relayed_request_needs_the_callers_key_on_its_node_and_the_cluster_secret_on_the_owner(
    cluster: list[ServerProcess], tmp_path: Path
) -> None:
    keys = {node.jobs_dir.name: make_key(node.jobs_dir, "admin")[1] for node in cluster}
    go = tmp_path / "go"
    job = cluster[0].post("/jobs", json={"args": py(SLOW) + [str(go)]}, headers=bearer(keys["n1"])).json()
    running = wait_until(
        lambda: (
            (j := cluster[0].get(f"/jobs/{job['id']}", headers=bearer(keys["n1"])).json())["status"] == "IN_PROGRESS"
            and j
        ),
        timeout=20,
    )
    owner = _owner(cluster, running)
    path = f"/jobs/{job['id']}/logs"
    wait_until(lambda: b"err 4" in owner.get(path, headers=bearer(keys[owner.jobs_dir.name])).content, timeout=15)
    for node in cluster:  # each node checks the caller's key against its own keys file
        assert node.get(path, headers=bearer(keys[node.jobs_dir.name])).content.endswith(b"err 4\n")
        assert node.get(path).status_code == 401
    other = next(node for node in cluster if node is not owner)
    assert owner.get(path, headers=bearer(keys[other.jobs_dir.name])).status_code == 401
    forged = owner.get(path, headers={"X-Procq-Relay": "guess"})
    assert forged.status_code == 401
    assert owner.get("/jobs", headers={"X-Procq-Relay": "guess"}).status_code == 401
    go.touch()
