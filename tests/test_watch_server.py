"""GET /events, /stats, /metrics and /health, and the lifecycle log lines, on a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import py, wait_until
from tests.sse import open_stream

SLOW = py("import time; time.sleep(30)")


def test_events_report_every_state_change(start_server) -> None:
    server = start_server("--workers", "1")
    stream = open_stream(f"{server.url}/events")
    blocker = server.submit(SLOW)["id"]
    server.wait_status(blocker, "IN_PROGRESS")
    queued = server.submit(py("pass"))["id"]
    server.put(f"/jobs/{queued}/cancel")
    server.put(f"/jobs/{blocker}/cancel")
    ok = server.submit(py("pass"))["id"]
    bad = server.submit(py("raise SystemExit(2)"))["id"]
    server.wait_status(bad, "FAILED")
    server.http.delete(f"{server.url}/jobs/{ok}", timeout=10)

    seen: dict[str, list[str]] = {}
    while (event := stream.next())["event"] != "deleted":
        assert event["event"] == "job"
        data = event["data"]
        assert set(data) == {"id", "status", "enqueued_at", "started_at", "completed_at"}
        seen.setdefault(data["id"], []).append(data["status"])
    stream.close()
    assert event["data"] == {"id": ok}
    assert seen == {
        blocker: ["IN_QUEUE", "IN_PROGRESS", "CANCELED"],
        queued: ["IN_QUEUE", "CANCELED"],
        ok: ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"],
        bad: ["IN_QUEUE", "IN_PROGRESS", "FAILED"],
    }


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_and_stats_after_known_work(start_server, receiver) -> None:
    server = start_server("--workers", "2", "--webhook-attempts", "2")
    receiver.fail_next = 2  # the failing job's webhook fails twice and is given up
    failed = server.submit(py("raise SystemExit(1)"), webhook=receiver.url)["id"]
    server.wait_status(failed, "FAILED")
    wait_until(lambda: server.status(failed)["webhook_delivery"]["state"] == "failed", timeout=15)
    ok = [server.submit(py("import time; time.sleep(0.3)"), webhook=receiver.url)["id"] for _ in range(2)]
    running = server.submit(SLOW)["id"]
    for job_id in ok:
        server.wait_status(job_id, "COMPLETED")
    server.wait_status(running, "IN_PROGRESS")
    for job_id in ok:
        wait_until(lambda job_id=job_id: server.status(job_id)["webhook_delivery"]["state"] == "delivered")

    text = server.get("/metrics").text
    assert metric(text, "procq_jobs_submitted_total") == 4
    assert metric(text, 'procq_jobs_finished_total{outcome="COMPLETED"}') == 2
    assert metric(text, 'procq_jobs_finished_total{outcome="FAILED"}') == 1
    assert metric(text, 'procq_jobs_finished_total{outcome="CANCELED"}') == 0
    assert metric(text, "procq_job_queue_wait_seconds_count") == 4
    assert metric(text, "procq_job_run_seconds_count") == 3
    assert metric(text, "procq_job_run_seconds_sum") >= 0.6  # two runs of at least 0.3 s
    assert metric(text, 'procq_webhook_attempts_total{outcome="delivered"}') == 2
    assert metric(text, 'procq_webhook_attempts_total{outcome="failed"}') == 2
    assert metric(text, "procq_webhook_given_up_total") == 1
    assert metric(text, 'procq_jobs{status="IN_PROGRESS"}') == 1
    assert metric(text, 'procq_jobs{status="COMPLETED"}') == 2
    assert metric(text, "procq_workers_busy") == 1
    assert metric(text, "procq_workers_total") == 2

    stats = server.get("/stats").json()
    assert stats["counts"] == {"IN_QUEUE": 0, "IN_PROGRESS": 1, "COMPLETED": 2, "FAILED": 1, "CANCELED": 0}
    assert stats["workers"] == {"busy": 1, "total": 2}
    assert 0 < stats["submitted_per_s"] <= 4 and 0 < stats["completed_per_s"] <= 3
    assert stats["submitted_per_s"] > stats["completed_per_s"]


def test_health_reports_503_while_the_jobs_dir_cannot_be_written(start_server, jobs_dir: Path) -> None:
    server = start_server()
    assert server.get("/health").json() == {
        "status": "ok",
        "checks": {"dispatcher": "ok", "jobs_dir": "ok", "store": "ok"},
    }
    # Tests run as root, which chmod cannot stop: put a plain file where the directory was.
    moved = jobs_dir.with_name("jobs-moved")
    jobs_dir.rename(moved)
    jobs_dir.write_text("not a directory")
    try:
        response = server.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable" and body["checks"]["dispatcher"] == "ok"
        assert body["checks"]["jobs_dir"].startswith("not writable")
        refused = server.post("/jobs", json={"args": py("pass")})
        assert refused.status_code >= 500 and "description" in refused.json()
    finally:
        jobs_dir.unlink()
        moved.rename(jobs_dir)
    assert server.get("/health").status_code == 200
    server.submit(py("pass"))
    assert server.stop() == 0


def test_json_logs_have_one_line_per_lifecycle_event(start_server, tmp_path: Path) -> None:
    config = tmp_path / "procq.toml"
    config.write_text('log_format = "json"\nlog-level = "INFO"\n')
    server = start_server("--config", str(config))
    job = server.submit(py("pass"))["id"]
    server.wait_status(job, "COMPLETED")
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [(line["event"], line["status"]) for line in lines if line.get("job_id") == job]
    assert mine == [("submitted", "IN_QUEUE"), ("started", "IN_PROGRESS"), ("finished", "COMPLETED")]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
