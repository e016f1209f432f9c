"""End to end: run.py in a subprocess on a free port, real jobs, real webhooks, signals and crashes."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from procq.actors.keeper import protocol
from tests.helpers import ROOT, Receiver, pid_alive, py, wait_until

# A job that starts a grandchild and sleeps; on its second run (stdout.1.txt exists) it exits at once.
TREE_THEN_QUICK = (
    "import os, subprocess, sys, time\n"
    "if os.path.exists('stdout.1.txt'): sys.exit(0)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _tree_pids(server, job: dict) -> list[int]:
    """The job's root pid and its child's (printed by the job as its first line)."""
    child = wait_until(lambda: (server.jobs_dir / job["id"] / "stdout.txt").read_text().strip())
    return [job["pid"], int(child.split()[0])]


def test_submit_status_result_and_cancel_over_real_http(start_server) -> None:
    server = start_server()
    job = server.submit(py("print('hello')"), mime_type="text/x-greeting")
    done = server.wait_status(job["id"], "COMPLETED")
    assert done["exit_code"] == 0
    result = server.get(f"/jobs/{job['id']}/result")
    assert result.text == "hello\n" and result.headers["Content-Type"] == "text/x-greeting"
    sleeper = server.submit(py("import time; time.sleep(60)"))
    server.wait_status(sleeper["id"], "IN_PROGRESS")
    canceled = server.put(f"/jobs/{sleeper['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    assert server.stop() == 0


def test_the_webhook_arrives_for_each_terminal_state(start_server, receiver: Receiver) -> None:
    server = start_server()
    ok = server.submit(["true"], webhook=receiver.url)
    bad = server.submit(py("raise SystemExit(2)"), webhook=receiver.url)
    slow = server.submit(py("import time; time.sleep(60)"), webhook=receiver.url)
    server.wait_status(slow["id"], "IN_PROGRESS")
    server.put(f"/jobs/{slow['id']}/cancel")
    got = {d["id"]: d for d in receiver.wait_for(3)}
    assert got[ok["id"]] == {
        "id": ok["id"],
        "status": "COMPLETED",
        "result_url": f"/jobs/{ok['id']}/result",
        "status_url": f"/jobs/{ok['id']}",
    }
    assert got[bad["id"]]["status"] == "FAILED" and got[slow["id"]]["status"] == "CANCELED"
    for job in (bad, slow):  # status_url answers with the job for every state; result_url only once COMPLETED
        assert server.get(got[job["id"]]["status_url"]).json()["status"] == got[job["id"]]["status"]
        assert server.get(got[job["id"]]["result_url"]).status_code == 409
    assert all(h["Content-Type"] == "application/json" for h in receiver.headers)
    delivery = wait_until(lambda: (j := server.status(ok["id"]))["webhook_delivery"]["state"] == "delivered" and j)
    assert delivery["webhook_delivery"]["attempts"] == 1
    assert server.stop() == 0


def test_a_receiver_that_is_down_gets_the_webhook_when_it_comes_up(start_server) -> None:
    probe = Receiver()
    port = probe.port
    probe.close()  # nothing listens on `port` now
    server = start_server("--webhook-attempts", "30")
    job = server.submit(["true"], webhook=f"http://127.0.0.1:{port}/hook")
    failing = wait_until(
        lambda: (j := server.status(job["id"]))["webhook_delivery"] and j["webhook_delivery"]["attempts"] >= 2 and j
    )
    assert failing["webhook_delivery"]["state"] == "pending" and failing["webhook_delivery"]["last_error"]
    receiver = Receiver(port)
    try:
        assert receiver.wait_for(1)[0]["id"] == job["id"]
        wait_until(lambda: server.status(job["id"])["webhook_delivery"]["state"] == "delivered")
    finally:
        receiver.close()
    assert server.stop() == 0


def test_a_pending_delivery_is_made_after_a_restart(start_server) -> None:
    probe = Receiver()
    port = probe.port
    probe.close()
    server = start_server("--webhook-attempts", "50")
    job = server.submit(["true"], webhook=f"http://127.0.0.1:{port}/hook")
    wait_until(lambda: (server.status(job["id"])["webhook_delivery"] or {}).get("attempts", 0) >= 1)
    assert server.stop() == 0
    meta = json.loads((server.jobs_dir / job["id"] / "meta.json").read_text())
    assert meta["webhook_delivery"]["state"] == "pending"
    receiver = Receiver(port)
    try:
        again = start_server("--webhook-attempts", "50")
        assert receiver.wait_for(1)[0] == {
            "id": job["id"],
            "status": "COMPLETED",
            "result_url": f"/jobs/{job['id']}/result",
            "status_url": f"/jobs/{job['id']}",
        }
        wait_until(lambda: again.status(job["id"])["webhook_delivery"]["state"] == "delivered")
        assert again.stop() == 0
    finally:
        receiver.close()


def test_sigterm_ends_every_job_process_and_the_job_runs_again_after_restart(start_server) -> None:
    server = start_server()
    job = server.submit(py(TREE_THEN_QUICK))
    running = server.wait_status(job["id"], "IN_PROGRESS")
    pids = _tree_pids(server, running)
    assert server.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(p) for p in pids)
    meta = json.loads((server.jobs_dir / job["id"] / "meta.json").read_text())
    assert meta["status"] == "IN_QUEUE" and "shutdown" in meta["interrupted"] and meta["attempts"] == 1
    again = start_server()
    done = again.wait_status(job["id"], "COMPLETED")
    assert done["attempts"] == 2
    assert again.stop(signal.SIGINT) == 0


def test_after_a_crash_no_job_is_lost_the_running_one_is_readopted_and_the_queue_keeps_its_order(
    start_server,
) -> None:
    # The restart contract: a crash of the server never stops a running job; the next start re-adopts it.
    server = start_server("--workers", "1")
    running = server.submit(py(TREE_THEN_QUICK))
    pids = _tree_pids(server, server.wait_status(running["id"], "IN_PROGRESS"))
    queued = [server.submit(py("print('queued')")) for _ in range(4)]
    server.kill()  # SIGKILL: no cleanup at all
    again = start_server("--workers", "1")
    assert all(pid_alive(p) for p in pids)  # the job's tree outlived the server, and the new one adopted it
    readopted = again.status(running["id"])
    assert readopted["status"] == "IN_PROGRESS" and readopted["attempts"] == 1 and readopted["pid"] == pids[0]
    assert all(again.status(q["id"])["status"] == "IN_QUEUE" for q in queued)  # its worker slot stays taken
    canceled = again.put(f"/jobs/{running['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert again.wait_status(running["id"], "CANCELED")["attempts"] == 1
    assert not any(pid_alive(p) for p in pids)
    finished = [again.wait_status(q["id"], "COMPLETED") for q in queued]
    starts = [f["started_at"] for f in finished]
    assert starts == sorted(starts)  # original order
    assert again.stop() == 0


def test_a_job_whose_keeper_was_lost_more_often_than_the_restart_limit_fails_with_the_reason(start_server) -> None:
    # Only a run whose process supervision was lost too (the keeper died) is cut short and counted.
    server = start_server("--restart-limit", "1")
    job = server.submit(py(TREE_THEN_QUICK))
    pids = _tree_pids(server, server.wait_status(job["id"], "IN_PROGRESS"))
    server.kill()
    _kill_keeper(server.jobs_dir)
    again = start_server("--restart-limit", "1")
    failed = again.wait_status(job["id"], "FAILED")
    assert "not run again" in failed["error"] and "keeper" in failed["error"] and failed["exit_code"] is None
    assert not any(pid_alive(p) for p in pids)
    assert again.stop() == 0


def _kill_keeper(jobs_dir: Path) -> None:
    import psutil

    info = json.loads((jobs_dir / protocol.INFO).read_text())
    keeper = psutil.Process(info["pid"])
    keeper.kill()
    keeper.wait(10)


def test_corrupt_and_foreign_entries_are_skipped_at_start(start_server, jobs_dir: Path) -> None:
    (jobs_dir / ("a" * 32)).mkdir()
    (jobs_dir / ("a" * 32) / "meta.json").write_text("{half a json")
    (jobs_dir / ("b" * 32)).mkdir()  # no meta.json at all
    (jobs_dir / "notes.txt").write_text("someone's file")
    (jobs_dir / "not-a-job").mkdir()
    server = start_server()
    job = server.submit(["true"])
    server.wait_status(job["id"], "COMPLETED")
    assert server.get(f"/jobs/{'a' * 32}/status").status_code == 404
    assert server.stop() == 0
    assert "skipping" in server.log() and (jobs_dir / "notes.txt").exists()


def test_a_second_server_on_the_same_jobs_directory_refuses_to_start(start_server, jobs_dir: Path) -> None:
    server = start_server()
    second = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--port", "0", "--jobs-dir", str(jobs_dir)],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )
    assert second.returncode == 2 and b"another procq server" in second.stderr
    assert server.stop() == 0


def test_the_child_gets_neither_the_servers_secrets_nor_its_working_directory(start_server) -> None:
    server = start_server(env={"PROCQ_WEBHOOK_SECRET": "s3cret", "PROCQ_ANYTHING": "x", "VISIBLE": "yes"})
    job = server.submit(py("import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"))
    server.wait_status(job["id"], "COMPLETED")
    seen = server.get(f"/jobs/{job['id']}/result").json()
    # none of the server's settings; only the run marker every job process carries (<job id>.<attempt>)
    assert [k for k in seen["env"] if k.startswith("PROCQ_")] == ["PROCQ_RUN"] and seen["env"]["VISIBLE"] == "yes"
    assert seen["env"]["PROCQ_RUN"] == f"{job['id']}.1"
    assert Path(seen["cwd"]) == (server.jobs_dir / job["id"]).resolve()
    assert server.stop() == 0


def test_a_large_result_streams_without_the_server_holding_it_in_memory(start_server) -> None:
    server = start_server()
    size = 200 * 1024 * 1024
    job = server.submit(py(f"import sys; sys.stdout.buffer.write(b'x' * {size})"))
    server.wait_status(job["id"], "COMPLETED", timeout=60)
    before = psutil.Process(server.proc.pid).memory_info().rss
    digest, received = hashlib.sha256(), 0
    with server.get(f"/jobs/{job['id']}/result", stream=True) as response:
        assert int(response.headers["Content-Length"]) == size
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            received += len(chunk)
            peak = psutil.Process(server.proc.pid).memory_info().rss
    assert received == size and digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    assert peak - before < 64 * 1024 * 1024  # far below the 200 MiB it sent
    assert server.stop() == 0


def test_help_documents_every_flag_with_its_environment_variable() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for flag in ("--host", "--port", "--jobs-dir", "--workers", "--grace", "--webhook-attempts"):
        assert flag in out
    assert "PROCQ_HOST" in out and "PROCQ_WORKERS" in out


def test_environment_variables_configure_the_server(monkeypatch) -> None:
    from procq.server import flags as run

    monkeypatch.setenv("PROCQ_PORT", "9123")
    monkeypatch.setenv("PROCQ_WORKERS", "7")
    args = run.parse_args([])
    assert (args.port, args.workers, args.host) == (9123, 7, "127.0.0.1")
    assert run.parse_args(["--workers", "3"]).workers == 3  # a flag beats the variable


@pytest.mark.parametrize("flag", ["--workers=0", "--port=abc"])
def test_bad_settings_stop_the_server_with_a_message(flag: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), flag], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and flag.split("=")[0] in proc.stderr


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs a POSIX shell")
def test_cancel_ends_a_shell_script_and_the_sleeps_it_started(start_server) -> None:
    server = start_server()
    job = server.submit(["/bin/sh", "-c", "sleep 60 & sleep 61 & echo started; wait"])
    running = server.wait_status(job["id"], "IN_PROGRESS")
    sleeps = wait_until(lambda: len(kids := psutil.Process(running["pid"]).children()) == 2 and kids)
    response = server.put(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "CANCELED"
    assert not any(pid_alive(p.pid) for p in sleeps) and not pid_alive(running["pid"])
    assert server.stop() == 0


def test_a_body_far_over_the_limit_is_refused_in_json_by_the_http_layer_too(start_server, jobs_dir: Path) -> None:
    server = start_server("--max-body-bytes", "1000")
    huge = b'{"args": ["echo", "' + b"x" * 5000 + b'"]}'  # past waitress's own cap (twice the app's limit)
    response = server.post("/jobs", data=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.headers["Content-Type"] == "application/json"
    assert response.json()["description"]
    just_over = b'{"args": ["echo", "' + b"x" * 1000 + b'"]}'
    response = server.post("/jobs", data=just_over, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "1000" in response.json()["description"]
    assert [p for p in jobs_dir.iterdir() if not p.name.startswith(".")] == []
    assert server.stop() == 0
