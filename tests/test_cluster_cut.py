"""A node cut off from the database (a TCP proxy the test cuts) answers what it knows at once, the
questions only the database answers with a 503 once the read fails, and its Dispatcher keeps serving
its own jobs meanwhile: those reads run on the API's threads, not the Dispatcher's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import ServerProcess, end_keeper, pid_alive, py, wait_until
from tests.tcpproxy import TcpProxy

LEASE_S = 30.0  # the node must not fence itself (lease - 2 s after the cut) before the test is done
UNKNOWN_ID = "0" * 32


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


def test_a_cut_off_node_answers_about_its_own_jobs_while_database_questions_fail_with_503(
    tmp_path: Path, pg_url: str, started: list[ServerProcess]
) -> None:
    proxy = TcpProxy(5432)
    try:
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        args = ("--node-name", "cut", "--workers", "2", "--lease", str(LEASE_S), "--retention", "60")
        node = ServerProcess(tmp_path / "cut", *args, env={"PROCQ_DATABASE_URL": url})
        started.append(node)
        job = node.submit(py("import time; time.sleep(120)"))
        pid = wait_until(lambda: node.status(job["id"])["pid"], timeout=20)
        proxy.cut()

        answers: dict[str, tuple[requests.Response, float]] = {}

        def ask(path: str) -> None:
            response = requests.get(node.url + path, timeout=60)
            answers[path] = (response, time.monotonic())

        questions = ["/stats", "/queues", "/nodes", f"/jobs/{UNKNOWN_ID}", "/jobs"]
        waiting = [threading.Thread(target=ask, args=(path,)) for path in questions]
        for thread in waiting:
            thread.start()
        time.sleep(0.3)  # the questions are on their way to the database
        local = node.get(f"/jobs/{job['id']}/status")
        local_at = time.monotonic()
        health = node.get("/health").json()
        resources = node.get("/resources")
        # a cancel taken during the cut: its record waits for the database (the test's proxy holds the
        # writer's bytes; a real partition fails it within seconds), then the run ends
        canceled: list[requests.Response] = []
        cancel = threading.Thread(target=lambda: canceled.append(node.put(f"/jobs/{job['id']}/cancel")))
        cancel.start()
        for thread in waiting:
            thread.join(timeout=60)

        assert local.status_code == 200 and local.json()["status"] == "IN_PROGRESS"
        assert health["checks"]["dispatcher"] == "ok" and resources.status_code == 200
        for path in questions:
            response, answered_at = answers[path]
            assert response.status_code == 503, (path, response.text)
            assert response.json()["title"] == "Database unavailable"
            assert answered_at > local_at, f"{path} was answered before the local status: it never waited"
        proxy.heal()
        cancel.join(timeout=60)
        assert canceled and canceled[0].status_code == 200, canceled
        assert node.wait_status(job["id"], "CANCELED", timeout=20)["status"] == "CANCELED"
        assert not pid_alive(pid)
        assert node.get("/stats").json()["counts"]["CANCELED"] == 1  # the database answers again
        assert node.get(f"/jobs/{UNKNOWN_ID}").status_code == 404
    finally:
        proxy.close()
