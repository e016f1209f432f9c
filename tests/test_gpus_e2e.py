"""GPUs and counted resources over real HTTP, with real child processes that report the devices they see.

This machine has no GPU: the server declares --gpus 0,1. With PROCQ_TEST_GPUS=auto the same tests run
against the machine's own GPUs (at least two; see the README)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, py

GPUS = os.environ.get("PROCQ_TEST_GPUS", "0,1")

# A job: notes its start and end in a shared log (appends of one short line each, in the order they
# happen), prints the GPU variables it sees, waits for its gate file (if not "-"), then `hold` seconds.
JOB = r"""
import json, os, sys, time
log, name, gate, hold = sys.argv[1:5]
def note(what):
    with open(log, "a") as f:
        f.write(json.dumps([what, name, os.environ.get("CUDA_VISIBLE_DEVICES")]) + "\n")
note("start")
names = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES")
print(json.dumps({k: os.environ.get(k) for k in names}), flush=True)
deadline = time.monotonic() + 30
while gate != "-" and not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(float(hold))
note("end")
"""


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.log"


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Path]:
    """A directory of gate files; every gate a test names is opened at teardown, so no job is left waiting."""
    path = tmp_path / "gates"
    path.mkdir()
    yield path
    for name in ("a", "b", "c"):
        (path / name).touch()


def _job(events: Path, name: str, gate: Path | None = None, hold: float = 0.0) -> list[str]:
    return [sys.executable, "-c", JOB, str(events), name, str(gate) if gate else "-", str(hold)]


def _gpu_server(start_server: Any, *flags: str) -> tuple[Any, list[str]]:
    server = start_server("--gpus", GPUS, "--workers", "8", *flags)
    ids = [gpu["id"] for gpu in server.get("/resources").json()["gpus"]]
    if len(ids) < 2:
        server.stop()
        pytest.skip(f"--gpus {GPUS} gives {len(ids)} GPU(s); these tests need two")
    return server, ids[:2]


def _seen(server: Any, job_id: str) -> dict[str, str | None]:
    return json.loads(server.get(f"/jobs/{job_id}/result").text)


def _replay(events: Path) -> tuple[int, int]:
    """Walk the log in order: fail if two jobs ever held one device at once. Returns the most GPUs and
    the most jobs in use at one moment."""
    holding: dict[str, str] = {}  # device -> job name
    running: set[str] = set()
    most_gpus = most_jobs = 0
    for what, name, visible in map(json.loads, events.read_text().splitlines()):
        devices = [d for d in (visible or "").split(",") if d]
        if what == "start":
            for device in devices:
                assert device not in holding, f"{name} started on GPU {device} while {holding[device]} held it"
                holding[device] = name
            running.add(name)
        else:
            for device in devices:
                del holding[device]
            running.discard(name)
        most_gpus, most_jobs = max(most_gpus, len(holding)), max(most_jobs, len(running))
    return most_gpus, most_jobs


def _starts(events: Path) -> list[str]:
    return [name for what, name, _ in map(json.loads, events.read_text().splitlines()) if what == "start"]


def test_each_job_sees_exactly_the_gpus_it_was_given_and_never_more_jobs_than_gpus(
    start_server: Any, events: Path
) -> None:
    server, gpus = _gpu_server(start_server)
    jobs = [server.submit(_job(events, f"one{i}", hold=0.2), requires={"gpus": 1}) for i in range(6)]
    jobs.append(server.submit(_job(events, "two", hold=0.2), requires={"gpus": 2}))
    plain = server.submit(_job(events, "plain"))
    for job in [*jobs, plain]:
        done = server.wait_status(job["id"], "COMPLETED", timeout=30)
        seen = _seen(server, job["id"])
        assigned = done["assigned"]["gpus"] if done["requires"] else []
        assert seen["CUDA_VISIBLE_DEVICES"] == ",".join(assigned)
        assert seen["NVIDIA_VISIBLE_DEVICES"] == (",".join(assigned) or "none")
        assert seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and seen["HIP_VISIBLE_DEVICES"] is None
        assert set(assigned) <= set(gpus)
        if GPUS != "auto":  # no management library answers here: GPU memory is not measured, so null
            assert done["resources"]["peak_gpu_memory_bytes"] is None
    two = server.status(jobs[-1]["id"])
    assert two["requires"] == {"gpus": 2} and sorted(two["assigned"]["gpus"]) == sorted(gpus)
    assert server.status(plain["id"])["assigned"] is None  # it asked for nothing, so it sees no GPU
    most_gpus, _ = _replay(events)
    assert most_gpus <= 2
    assert server.stop() == 0


def test_a_request_larger_than_the_node_is_a_400_that_says_what_the_node_has(start_server: Any) -> None:
    server, _ = _gpu_server(start_server, "--resource", "license=2")
    for requires, words in (
        ({"gpus": 99}, ["requires.gpus is 99", "GPUs", "license=2"]),
        ({"license": 3}, ["requires.license is 3", "license=2"]),
        ({"tape": 1}, ["no resource named 'tape'", "license=2"]),
        ({"gpus": "two"}, ["requires.gpus"]),
        ({"gpus": -1}, ["requires.gpus"]),
    ):
        response = server.post("/jobs", json={"args": py("pass"), "requires": requires})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["title"] and all(word in body["description"] for word in words), body
    assert server.get("/jobs").json()["jobs"] == []
    assert server.stop() == 0


def test_counted_resources_never_oversubscribe(start_server: Any, events: Path) -> None:
    server, _ = _gpu_server(start_server, "--resource", "license=2")
    jobs = [server.submit(_job(events, f"lic{i}", hold=0.2), requires={"license": 1}) for i in range(6)]
    for job in jobs:
        assert server.wait_status(job["id"], "COMPLETED", timeout=30)["assigned"] == {"license": 1}
    _, most_jobs = _replay(events)
    assert most_jobs == 2  # both licences were used, never a third
    assert server.stop() == 0


def test_a_two_gpu_job_at_the_front_is_not_starved_by_one_gpu_jobs(
    start_server: Any, events: Path, gates: Path
) -> None:
    server, _ = _gpu_server(start_server)
    first = server.submit(_job(events, "first", gates / "a"), requires={"gpus": 1})
    server.wait_status(first["id"], "IN_PROGRESS")
    big = server.submit(_job(events, "big"), requires={"gpus": 2})
    small = [server.submit(_job(events, f"small{i}"), requires={"gpus": 1}) for i in range(3)]
    # a job needing no GPU still starts at once, which shows the scheduler looked past the waiting ones
    plain = server.submit(_job(events, "plain"))
    server.wait_status(plain["id"], "COMPLETED")
    assert [server.status(job["id"])["status"] for job in (big, *small)] == ["IN_QUEUE"] * 4
    (gates / "a").touch()
    for job in (first, big, *small):
        server.wait_status(job["id"], "COMPLETED", timeout=30)
    starts = _starts(events)
    assert starts.index("big") < min(starts.index(f"small{i}") for i in range(3))
    _replay(events)
    assert server.stop() == 0


def test_gpus_are_released_however_a_run_ends(start_server: Any, events: Path, gates: Path) -> None:
    server, _ = _gpu_server(start_server)
    both = {"gpus": 2}
    canceled = server.submit(_job(events, "canceled", gates / "a"), requires=both)
    server.wait_status(canceled["id"], "IN_PROGRESS")
    assert server.put(f"/jobs/{canceled['id']}/cancel").json()["status"] == "CANCELED"
    timed_out = server.submit(_job(events, "timed_out", gates / "b"), requires=both, timeout_seconds=0.5)
    failed = server.submit(py("raise SystemExit(3)"), requires=both)
    retried = server.submit(py("raise SystemExit(1)"), requires=both, max_attempts=2, retry_backoff_seconds=0)
    limit = server.submit(
        py("import time\nx = bytearray(300_000_000)\ntime.sleep(30)"), requires=both, max_memory_bytes=100_000_000
    )
    after = server.submit(_job(events, "after"), requires=both)
    assert server.wait_status(timed_out["id"], "FAILED", timeout=30)["error"].startswith("timed out")
    assert server.wait_status(failed["id"], "FAILED", timeout=30)["exit_code"] == 3
    assert server.wait_status(retried["id"], "FAILED", timeout=30)["attempts"] == 2
    assert "memory limit" in server.wait_status(limit["id"], "FAILED", timeout=30)["error"]
    assert server.wait_status(after["id"], "COMPLETED", timeout=30)["assigned"]["gpus"]
    assert all(gpu["job_id"] is None for gpu in server.get("/resources").json()["gpus"])
    assert server.stop() == 0


def test_requires_survive_a_crash_and_the_gpus_are_free_again_after_it(
    start_server: Any, events: Path, gates: Path
) -> None:
    server, _ = _gpu_server(start_server)
    running = server.submit(_job(events, "running", gates / "a"), requires={"gpus": 2})
    server.wait_status(running["id"], "IN_PROGRESS")
    waiting = server.submit(_job(events, "waiting"), requires={"gpus": 1})
    server.kill()
    restarted, _ = _gpu_server(start_server)
    (gates / "a").touch()
    for job in (running, waiting):
        done = restarted.wait_status(job["id"], "COMPLETED", timeout=30)
        assert done["requires"] == job["requires"]
        assert len(done["assigned"]["gpus"]) == job["requires"]["gpus"]
    assert restarted.stop(signal.SIGTERM) == 0


def test_resources_and_metrics_show_what_is_in_use_and_free(start_server: Any, events: Path, gates: Path) -> None:
    server, gpus = _gpu_server(start_server, "--resource", "license=3")
    job = server.submit(_job(events, "holder", gates / "a"), requires={"gpus": 1, "license": 2})
    server.wait_status(job["id"], "IN_PROGRESS")
    node = server.get("/resources").json()
    on = {gpu["id"]: gpu["job_id"] for gpu in node["gpus"]}
    assert on[server.status(job["id"])["assigned"]["gpus"][0]] == job["id"]
    assert sorted(on.values(), key=str).count(None) == len(on) - 1
    assert node["resources"] == {"license": {"total": 3, "in_use": 2, "free": 1}}
    metrics = server.get("/metrics").text
    assert 'procq_resource_units{resource="gpus",state="in_use"} 1.0' in metrics
    assert f'procq_resource_units{{resource="gpus",state="free"}} {len(on) - 1}.0' in metrics
    assert 'procq_resource_units{resource="license",state="free"} 1.0' in metrics
    (gates / "a").touch()
    server.wait_status(job["id"], "COMPLETED")
    assert server.stop() == 0


def _procq(server: Any, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PROCQ_URL": server.url}
    command = [sys.executable, "-m", "procq.server.console", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_the_command_line_asks_for_gpus_and_shows_what_a_job_holds(start_server: Any) -> None:
    server, gpus = _gpu_server(start_server, "--resource", "license=1")
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    done = _procq(server, "submit", "--gpus", "2", "--require", "license=1", "--wait", "--", sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.strip().split(",")) == sorted(gpus)
    (job,) = server.get("/jobs").json()["jobs"]
    assert job["requires"] == {"gpus": 2, "license": 1}
    panel = _procq(server, "status", job["id"]).stdout
    assert "requires" in panel and "gpus=2 license=1" in panel
    assert f"GPU {','.join(job['assigned']['gpus'])} license=1" in panel
    table = _procq(server, "ls").stdout
    assert "HOLDS" in table and f"GPU {','.join(job['assigned']['gpus'])}" in table
    refused = _procq(server, "submit", "--gpus", "3", "--", sys.executable, "-c", "pass")
    assert refused.returncode != 0 and "requires.gpus is 3" in refused.stderr
    assert _procq(server, "submit", "--require", "license", "--", "x").returncode == 2
    assert server.stop() == 0
