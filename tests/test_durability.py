"""What the store of record promises: batches all or nothing, deletes and cancels that survive a SIGKILL,
a database rebuilt from the job directories, a full disk reported and never papered over, long chains."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
import requests

from procq.actors import transitions
from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.dispatch.recovery import sweep_deleted
from procq.actors.job import IdGenerator, Job, JobRequest, Status, Usage
from procq.actors.settings import Settings
from procq.actors.store.sqlite import DB_NAME, SqliteStore
from tests.helpers import ServerProcess, py, wait_until

ASK = 10
T0, T1 = "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z"


def _job_dirs(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in jobs_dir.iterdir() if not p.name.startswith("."))


# --- POST /jobs/batch -------------------------------------------------------------------------------


def test_a_batch_with_one_invalid_job_is_refused_whole_naming_its_index(start_server, jobs_dir: Path) -> None:
    server = start_server()
    bodies = [{"args": ["true"]}, {"args": ["true"]}, {"args": []}, {"args": ["true"]}]
    response = server.post("/jobs/batch", json={"jobs": bodies})
    assert response.status_code == 400 and response.json()["description"].startswith("jobs[2]: ")
    assert _job_dirs(jobs_dir) == []
    assert server.get("/jobs").json()["jobs"] == []
    assert server.stop() == 0


def test_a_batch_makes_every_job_in_order_before_it_answers(start_server, jobs_dir: Path) -> None:
    server = start_server()
    bodies = [{"args": py(f"print({n})"), "tags": [f"n{n}"]} for n in range(5)]
    response = server.post("/jobs/batch", json={"jobs": bodies})
    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert [job["tags"] for job in jobs] == [[f"n{n}"] for n in range(5)]
    assert [job["id"] for job in jobs] == sorted(job["id"] for job in jobs)
    for job in jobs:  # the contract: directory and meta.json exist before the answer
        assert json.loads((jobs_dir / job["id"] / "meta.json").read_text())["id"] == job["id"]
    done = [server.wait_status(job["id"], "COMPLETED") for job in jobs]
    assert [server.get(f"/jobs/{job['id']}/result").text for job in done] == [f"{n}\n" for n in range(5)]
    assert server.stop() == 0


def test_an_idempotency_key_covers_the_whole_batch(start_server) -> None:
    server = start_server()
    body, headers = {"jobs": [{"args": ["true"]}, {"args": ["false"]}]}, {"Idempotency-Key": "batch-1"}
    first = server.post("/jobs/batch", json=body, headers=headers)
    again = server.post("/jobs/batch", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    other = server.post("/jobs/batch", json={"jobs": [{"args": ["true"]}]}, headers=headers)
    assert other.status_code == 409
    assert len(server.get("/jobs").json()["jobs"]) == 2
    assert server.stop() == 0


# --- durable before answered ------------------------------------------------------------------------


def test_a_deleted_job_stays_deleted_after_a_sigkill(start_server, jobs_dir: Path) -> None:
    server = start_server()
    job = server.submit(["true"])
    server.wait_status(job["id"], "COMPLETED")
    assert requests.delete(f"{server.url}/jobs/{job['id']}", timeout=10).status_code == 204
    server.kill()
    again = start_server()
    assert again.get(f"/jobs/{job['id']}/status").status_code == 404
    assert job["id"] not in _job_dirs(jobs_dir)
    assert again.stop() == 0


def test_a_canceled_queued_job_stays_canceled_after_a_sigkill(start_server, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    server = start_server("--workers", "1")
    blocker = server.submit(py("import time; time.sleep(30)"))
    server.wait_status(blocker["id"], "IN_PROGRESS")
    queued = server.submit(py(f"open({str(marker)!r}, 'w').close()"))
    assert server.put(f"/jobs/{queued['id']}/cancel").json()["status"] == "CANCELED"
    server.kill()
    again = start_server("--workers", "1")
    assert again.status(queued["id"])["status"] == "CANCELED"
    again.wait_status(blocker["id"], "IN_PROGRESS")  # the blocker runs again; the canceled job never does
    assert not marker.exists()
    requests.put(f"{again.url}/jobs/{blocker['id']}/cancel", timeout=30)
    assert again.stop() == 0


def test_a_canceled_running_job_stays_canceled_after_a_sigkill(start_server) -> None:
    server = start_server()
    job = server.submit(py("import time; time.sleep(30)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    assert server.put(f"/jobs/{job['id']}/cancel").json()["status"] == "CANCELED"
    server.kill()
    again = start_server()
    after = again.status(job["id"])
    assert (after["status"], after["attempts"]) == ("CANCELED", 1)
    assert again.stop() == 0


# --- the database is the truth; the directories can rebuild it --------------------------------------


def test_a_lost_database_is_rebuilt_from_the_job_directories(start_server, jobs_dir: Path) -> None:
    server = start_server()
    done = server.submit(py("print('kept')"), tags=["keep"])
    failed = server.submit(py("raise SystemExit(3)"))
    server.wait_status(done["id"], "COMPLETED")
    server.wait_status(failed["id"], "FAILED")
    assert server.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{jobs_dir / DB_NAME}{suffix}").unlink(missing_ok=True)
    again = start_server()
    assert again.status(failed["id"])["exit_code"] == 3
    assert again.get(f"/jobs/{done['id']}/result").text == "kept\n"
    assert [job["id"] for job in again.get("/jobs", params={"tag": "keep"}).json()["jobs"]] == [done["id"]]
    assert "rebuilt from 2 job directories" in again.log()
    assert again.stop() == 0


def test_meta_json_that_lags_behind_the_store_is_rewritten_at_start(start_server, jobs_dir: Path) -> None:
    server = start_server()
    job = server.submit(["true"])
    server.wait_status(job["id"], "COMPLETED")
    assert server.stop() == 0
    meta = jobs_dir / job["id"] / "meta.json"
    stale = json.loads(meta.read_text()) | {"status": "IN_QUEUE", "exit_code": None}
    meta.write_text(json.dumps(stale))
    with sqlite3.connect(jobs_dir / DB_NAME) as db:  # as if the crash came between commit and file
        db.execute("UPDATE jobs SET synced = 0 WHERE id = ?", (job["id"],))
    again = start_server()
    assert json.loads(meta.read_text())["status"] == "COMPLETED"
    assert again.status(job["id"])["status"] == "COMPLETED"
    assert again.stop() == 0


# --- a full disk --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs as the jobs directory, mounted for this test and removed after it."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.name != "posix" or shutil.which("mount") is None:
        pytest.skip("needs mount(8) to make a small filesystem")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_gives_5xx_reports_nothing_it_could_not_store_and_health_names_it(small_disk: Path) -> None:
    server = ServerProcess(small_disk, "--workers", "1")
    try:
        kept = server.submit(["true"])
        server.wait_status(kept["id"], "COMPLETED")
        _fill(small_disk / "ballast")
        response = server.post("/jobs", json={"args": ["true", "x" * 20000]})
        assert response.status_code >= 500 and set(response.json()) >= {"title", "description"}
        health = server.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["store"] != "ok"
        assert [job["id"] for job in server.get("/jobs").json()["jobs"]] == [kept["id"]]
        (small_disk / "ballast").unlink()
        later = server.submit(["true"])
        server.wait_status(later["id"], "COMPLETED")
        assert server.get("/health").status_code == 200
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.kill()


# --- chains and a Dispatcher that carries on -----------------------------------------------------------


@pytest.fixture
def dispatcher(settings: Settings) -> Iterator[pykka.ActorProxy]:
    yield Dispatcher.start(dataclasses.replace(settings, workers=1)).proxy()
    pykka.ActorRegistry.stop_all(timeout=10)


def _chain(dispatcher: pykka.ActorProxy, root_args: list[str], length: int) -> list[str]:
    dispatcher.set_queue("held", paused=True).get(timeout=ASK)
    ids = [dispatcher.submit(JobRequest(args=tuple(root_args), queue="held")).get(timeout=ASK).id]
    for _ in range(length):
        ids.append(dispatcher.submit(JobRequest(args=("true",), after=(ids[-1],), queue="held")).get(timeout=ASK).id)
    return ids


def test_a_thousand_long_chain_whose_root_fails_fails_whole_and_the_dispatcher_lives(dispatcher) -> None:
    ids = _chain(dispatcher, py("raise SystemExit(1)"), 1000)
    dispatcher.set_queue("held", paused=False).get(timeout=ASK)
    last = wait_until(lambda: (j := dispatcher.get(ids[-1]).get(timeout=ASK)).status.terminal and j, timeout=60)
    assert last.status is Status.FAILED and ids[-2] in last.error
    assert dispatcher.stats().get(timeout=ASK)["counts"]["FAILED"] == 1001
    assert dispatcher.ping().get(timeout=ASK)


def test_canceling_the_queued_root_of_a_thousand_long_chain_ends_every_dependent(dispatcher) -> None:
    ids = _chain(dispatcher, ["true"], 1000)
    assert dispatcher.cancel(ids[0]).get(timeout=ASK).wait(ASK)
    last = wait_until(lambda: (j := dispatcher.get(ids[-1]).get(timeout=ASK)).status.terminal and j, timeout=60)
    assert last.status is Status.FAILED
    counts = dispatcher.stats().get(timeout=ASK)["counts"]
    assert (counts["IN_QUEUE"], counts["CANCELED"], counts["FAILED"]) == (0, 1, 1000)


def test_an_exception_in_a_message_nobody_waits_on_does_not_stop_the_dispatcher(dispatcher) -> None:
    dispatcher.delivery_ended.defer(None)  # a bug's worth of garbage
    assert dispatcher.ping().get(timeout=ASK)
    job = dispatcher.submit(JobRequest(args=("true",))).get(timeout=ASK)
    assert wait_until(lambda: dispatcher.get(job.id).get(timeout=ASK).status is Status.COMPLETED)


# --- attempts start clean --------------------------------------------------------------------------


def test_a_job_queued_again_after_a_shutdown_keeps_no_stale_exit_code_or_error() -> None:
    running = Job(id="0" * 32, args=("true",), status=Status.IN_PROGRESS, attempts=1, pid=42, started_at=T0)
    after = transitions.interrupted_run(running, -15, Usage(), "interrupted by a server shutdown", 3, T1)
    assert (after.status, after.exit_code, after.error, after.pid) == (Status.IN_QUEUE, None, None, None)
    assert (after.runs[-1].exit_code, after.runs[-1].error) == (-15, "interrupted by a server shutdown")
    again = transitions.attempt_begun(dataclasses.replace(after, error="old", exit_code=9), 2, T1)
    assert (again.status, again.attempts, again.exit_code, again.error) == (Status.IN_PROGRESS, 2, None, None)


def test_a_directory_whose_deletion_was_committed_before_a_crash_is_swept_at_start(jobs_dir: Path) -> None:
    new_id = IdGenerator()
    kept, deleted = Job(id=new_id(), args=("true",)), Job(id=new_id(), args=("true",))
    store = SqliteStore(jobs_dir)
    try:
        store.create([kept, deleted]).result(timeout=5)
        store.delete([deleted.id]).result(timeout=5)  # the crash came before its directory was moved
        (jobs_dir / ("c" * 32)).mkdir()
        (jobs_dir / ("c" * 32) / "meta.json").write_text("{half")  # unreadable: not ours to judge
        assert sweep_deleted(jobs_dir, store) == 1
        assert _job_dirs(jobs_dir) == sorted([kept.id, "c" * 32])
    finally:
        store.close()
