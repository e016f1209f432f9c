"""Deciding what runs, over real HTTP: idempotent submit across a restart, rerun, /queues, progress
webhooks, env and cwd, and a clear 400 for every bad new field."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from procq.api.openapi import components as control_openapi
from tests.helpers import ROOT, Receiver, py, wait_until
from tests.secure_helpers import bearer, make_key

KEY = {"Idempotency-Key": "order-42 from the shop"}


@pytest.fixture
def gate(jobs_dir: Path) -> Iterator[Path]:
    """The file gated jobs wait for; created at teardown too, so a failed test leaves no job running."""
    path = jobs_dir.parent / "go"
    yield path
    path.touch()


def test_the_same_idempotency_key_returns_the_original_job_even_after_a_restart(start_server, jobs_dir: Path) -> None:
    server = start_server()
    body = {"args": py("print('once')")}
    first = server.post("/jobs", json=body, headers=KEY)
    assert first.status_code == 201
    job_id = first.json()["id"]
    replay = server.post("/jobs", json=body, headers=KEY)
    assert replay.status_code == 200 and replay.json()["id"] == job_id
    assert replay.headers["Location"] == f"/jobs/{job_id}/status"
    misuse = server.post("/jobs", json={"args": py("print('twice')")}, headers=KEY)
    assert misuse.status_code == 409 and job_id in misuse.json()["description"]
    assert [p.name for p in jobs_dir.iterdir() if not p.name.startswith(".")] == [job_id]
    meta = (jobs_dir / job_id / "meta.json").read_text()
    assert "order-42" not in meta  # only a hash of the key is stored
    server.wait_status(job_id, "COMPLETED")
    assert server.stop(signal.SIGTERM) == 0

    restarted = start_server()
    replay = restarted.post("/jobs", json=body, headers=KEY)
    assert replay.status_code == 200 and replay.json()["id"] == job_id and replay.json()["status"] == "COMPLETED"
    assert restarted.post("/jobs", json={"args": py("print('twice')")}, headers=KEY).status_code == 409
    other = restarted.post("/jobs", json=body, headers={"Idempotency-Key": "another key"})
    assert other.status_code == 201 and other.json()["id"] != job_id
    bad = restarted.post("/jobs", json=body, headers={"Idempotency-Key": "k" * 256})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["description"]
    assert restarted.stop() == 0


def test_rerun_makes_a_new_job_with_the_same_request_that_names_the_original(start_server, gate: Path) -> None:
    server = start_server()
    job = server.submit(py("import os; print(os.environ['GREETING'])"), priority=3, env={"GREETING": "hi"})
    server.wait_status(job["id"], "COMPLETED")
    response = server.post(f"/jobs/{job['id']}/rerun")
    assert response.status_code == 201
    again = response.json()
    assert again["id"] != job["id"] and again["rerun_of"] == job["id"]
    assert (again["args"], again["priority"], again["env"]) == (job["args"], 3, {"GREETING": "hi"})
    assert response.headers["Location"] == f"/jobs/{again['id']}/status"
    server.wait_status(again["id"], "COMPLETED")
    assert server.get(f"/jobs/{again['id']}/result").text.strip() == "hi"
    running = server.submit(py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"))
    conflict = server.post(f"/jobs/{running['id']}/rerun")
    assert conflict.status_code == 409 and "rerun" in conflict.json()["description"]
    assert server.post(f"/jobs/{'0' * 32}/rerun").status_code == 404
    gate.touch()
    assert server.stop() == 0


def test_queues_are_listed_and_can_be_paused_resumed_and_resized_over_http(start_server) -> None:
    server = start_server("--workers", "3", "--queue", "gpu=1")
    queues = {q["name"]: q for q in server.get("/queues").json()["queues"]}
    assert queues["gpu"] == {"name": "gpu", "parallelism": 1, "paused": False, "queued": 0, "running": 0}
    assert queues["default"]["parallelism"] == 3
    paused = server.put("/queues/gpu", json={"paused": True})
    assert paused.status_code == 200 and paused.json()["paused"] is True
    waiting = server.submit(py("pass"), queue="gpu")
    server.wait_status(server.submit(py("pass"))["id"], "COMPLETED")  # the default queue goes on
    assert server.status(waiting["id"])["status"] == "IN_QUEUE"
    gpu = next(q for q in server.get("/queues").json()["queues"] if q["name"] == "gpu")
    assert gpu["queued"] == 1 and gpu["running"] == 0
    resumed = server.put("/queues/gpu", json={"paused": False, "parallelism": 2.0})  # JSON Schema: 2.0 is an integer
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert isinstance(resumed.json()["parallelism"], int) and resumed.json()["parallelism"] == 2
    server.wait_status(waiting["id"], "COMPLETED")
    for name, body in [
        ("GPU!", {"paused": True}),
        ("gpu", {}),
        ("gpu", {"parallelism": 0}),
        ("gpu", {"paused": "yes"}),
        ("gpu", {"speed": 1}),
    ]:
        response = server.put(f"/queues/{name}", json=body)
        assert response.status_code == 400, (name, body, response.text)
        assert response.json()["title"] and response.json()["description"]
    assert server.stop() == 0


def test_progress_webhooks_report_the_start_and_stderr_ranges_at_most_every_half_second(
    start_server, receiver: Receiver
) -> None:
    server = start_server("--sample-interval", "0.05")
    code = "import sys, time\nfor i in range(10):\n    sys.stderr.write(f'line {i} é\\n'); sys.stderr.flush(); time.sleep(0.15)"
    events = ["start", "logs", "completed"]
    job = server.submit(py(code), webhook=receiver.url, webhook_events=events)
    stderr = (server.jobs_dir / job["id"] / "stderr.txt").read_bytes
    server.wait_status(job["id"], "COMPLETED")

    def logs() -> list[dict]:
        return [d for d in receiver.deliveries if d.get("event") == "logs"]

    wait_until(lambda: logs() and logs()[-1]["stderr_end"] == len(stderr()))
    wait_until(lambda: any(d.get("status") == "COMPLETED" for d in receiver.deliveries))
    first = receiver.deliveries[0]
    assert first == {"id": job["id"], "event": "start", "status": "IN_PROGRESS", "attempt": 1}
    ranges = [(d["stderr_offset"], d["stderr_end"]) for d in logs()]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert "".join(d["stderr"] for d in logs()) == stderr().decode("utf-8")
    times = [t for d, t in zip(receiver.deliveries, receiver.times, strict=True) if d.get("event") == "logs"]
    assert all(later - earlier >= 0.45 for earlier, later in zip(times, times[1:], strict=False))
    wall = server.status(job["id"])["resources"]["wall_seconds"]  # about 1.5 s: 10 lines, 0.15 s apart
    assert 2 <= len(ranges) <= wall / 0.5 + 2  # batched by the throttle, not one webhook per line

    start_only = server.submit(py("pass"), webhook=receiver.url, webhook_events=["start"])
    done = server.wait_status(start_only["id"], "COMPLETED")
    assert done["webhook_delivery"] is None  # no completion webhook was asked for
    wait_until(lambda: any(d["id"] == start_only["id"] for d in receiver.deliveries))
    assert server.stop() == 0


def test_env_and_a_cwd_inside_the_root_reach_the_command_and_escapes_are_refused(start_server, tmp_path) -> None:
    root = tmp_path / "work"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    server = start_server("--cwd-root", str(root), env={"PROCQ_SECRET": "hunter2"})
    code = "import os; print(os.getcwd()); print(os.environ['GREETING']); print('PROCQ_SECRET' in os.environ)"
    job = server.submit(py(code), env={"GREETING": "hello"}, cwd="sub")
    assert job["cwd"] == str((root / "sub").resolve())
    server.wait_status(job["id"], "COMPLETED")
    lines = server.get(f"/jobs/{job['id']}/result").text.split()
    assert lines == [str((root / "sub").resolve()), "hello", "False"]
    for cwd in ["../outside", "escape", "missing", str(tmp_path / "outside"), "sub/../../outside"]:
        response = server.post("/jobs", json={"args": ["true"], "cwd": cwd})
        assert response.status_code == 400 and response.json()["description"].startswith("cwd: "), cwd
    assert server.stop() == 0


BAD_FIELDS = [
    ({"priority": 1001}, "priority"),
    ({"priority": True}, "priority"),
    ({"queue": "GPU"}, "queue"),
    ({"run_at": "tomorrow"}, "run_at"),
    ({"run_at": "2026-13-01T00:00:00Z"}, "run_at"),
    ({"run_at": "2026-01-01T00:00:00Z", "delay_seconds": 5}, "delay_seconds"),
    ({"delay_seconds": -1}, "delay_seconds"),
    ({"after": ["nope"]}, "after"),
    ({"after": ["0" * 32]}, "after"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"max_output_bytes": 1.5}, "max_output_bytes"),
    ({"max_memory_bytes": "1G"}, "max_memory_bytes"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"retry_backoff_seconds": -1}, "retry_backoff_seconds"),
    ({"env": {"1X": "v"}}, "env"),
    ({"env": {"A": 1}}, "env"),
    ({"env": {"procq_token": "x"}}, "env"),
    ({"env": {"A": "a\u0000b"}}, "env"),
    ({"cwd": "sub"}, "cwd"),
    ({"webhook_events": ["done"]}, "webhook_events"),
    ({"webhook_events": ["start"]}, "webhook_events"),
]


def test_every_bad_new_field_is_a_400_naming_it_and_nothing_is_created(start_server, jobs_dir: Path) -> None:
    server = start_server()
    for fields, name in BAD_FIELDS:
        response = server.post("/jobs", json={"args": ["true"], **fields})
        assert response.status_code == 400, (fields, response.text)
        error = response.json()
        assert error["title"] and name in error["description"], (fields, error)
    assert [p for p in jobs_dir.iterdir() if not p.name.startswith(".")] == []
    assert server.stop() == 0


@pytest.mark.parametrize("flag", ["--queue=GPU=1", "--queue=gpu=0", "--queue=gpu", "--timeout=-1"])
def test_bad_control_flags_stop_the_server_with_a_message(flag: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), flag], capture_output=True, timeout=30)
    assert done.returncode == 2 and flag.split("=")[0].encode() in done.stderr


def _check(schema_name: str, instance: object) -> None:
    components = {**control_openapi.SCHEMAS, "Job": {"type": "object", "properties": control_openapi.JOB_FIELDS}}
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": components}}
    jsonschema.Draft202012Validator(root).validate(instance)


def test_the_documented_schemas_match_real_jobs_and_queues(start_server) -> None:
    server = start_server("--queue", "gpu=1")
    job = server.submit(py("raise SystemExit(1)"), max_attempts=2, retry_backoff_seconds=0.01, priority=2)
    failed = server.wait_status(job["id"], "FAILED")
    assert len(failed["runs"]) == 2
    _check("Job", failed)
    _check("Job", server.post(f"/jobs/{job['id']}/rerun").json())
    _check("QueueList", server.get("/queues").json())
    _check("Queue", server.put("/queues/gpu", json={"paused": True}).json())
    with pytest.raises(jsonschema.ValidationError):
        _check("Queue", {**server.get("/queues").json()["queues"][0], "paused": "no"})  # the check can fail
    assert server.stop() == 0


def test_runs_cut_short_by_a_crash_or_a_shutdown_are_recorded(start_server, gate: Path) -> None:
    server = start_server()
    job = server.submit(py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    server.kill()
    server = start_server()
    server.wait_status(job["id"], "IN_PROGRESS")
    assert server.stop(signal.SIGTERM) == 0
    server = start_server()
    gate.touch()
    done = server.wait_status(job["id"], "COMPLETED")
    errors = [(run["attempt"], run["error"]) for run in done["runs"]]
    # a crash of the server does not cut the run short (the keeper keeps it, the next server re-adopts it)
    assert errors == [
        (1, "interrupted by a server shutdown"),
        (2, None),
    ]
    assert done["runs"][0]["wall_seconds"] > 0 and done["resources"] == {
        key: done["runs"][1][key]
        for key in ("wall_seconds", "cpu_user_seconds", "cpu_system_seconds", "peak_rss_bytes", "peak_gpu_memory_bytes")
    }
    assert server.stop() == 0


def test_with_api_keys_idempotency_keys_dependencies_and_reruns_belong_to_their_submitter(
    start_server, jobs_dir: Path
) -> None:
    alice_id, alice = make_key(jobs_dir, "jobs:submit", "jobs:read", name="alice")
    _, bob = make_key(jobs_dir, "jobs:submit", "jobs:read", name="bob")
    admin_id, admin = make_key(jobs_dir, "admin", name="root")
    server = start_server()
    body = {"args": py("print(1)")}
    first = server.post("/jobs", json=body, headers={**bearer(alice), "Idempotency-Key": "k1"})
    other = server.post("/jobs", json=body, headers={**bearer(bob), "Idempotency-Key": "k1"})
    assert first.status_code == other.status_code == 201  # the same key from two submitters: two jobs
    job_id = first.json()["id"]
    assert other.json()["id"] != job_id and first.json()["owner"] == alice_id
    replay = server.post("/jobs", json=body, headers={**bearer(alice), "Idempotency-Key": "k1"})
    assert replay.status_code == 200 and replay.json()["id"] == job_id
    probe = server.post("/jobs", json={"args": py("pass"), "after": [job_id]}, headers=bearer(bob))
    assert probe.status_code == 400 and f"no job with id '{job_id}'" in probe.json()["description"]
    own = server.post("/jobs", json={"args": py("pass"), "after": [job_id]}, headers=bearer(alice))
    assert own.status_code == 201
    wait_until(lambda: server.get(f"/jobs/{job_id}/status", headers=bearer(alice)).json()["status"] == "COMPLETED")
    rerun = server.post(f"/jobs/{job_id}/rerun", headers=bearer(admin))
    assert rerun.status_code == 201 and rerun.json()["owner"] == admin_id and rerun.json()["rerun_of"] == job_id
    assert server.stop() == 0
