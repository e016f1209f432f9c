"""Scenario 5, scale: a server starting on 100,000 jobs (10,000 of them queued) and answering reads."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from procq.actors.job import IdGenerator, Job, Status, timestamp, utc_now

from bench.client import Client
from bench.report import Row, ms, percentile
from bench.server import BenchServer

# Queued jobs sleep, so the 2 workers stay busy and the rest stay queued while we measure.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
READS = 200


def write_jobs(jobs_dir: Path, total: int, queued: int) -> list[str]:
    """Write `total` job directories in the real meta.json format (Job.to_dict, as JobDir writes it,
    without the fsyncs): the oldest finished, the newest `queued` still IN_QUEUE."""
    jobs_dir.mkdir(parents=True)
    new_id, now = IdGenerator(), timestamp(utc_now())
    ids = []
    for i in range(total):
        job_id = new_id()
        if i < total - queued:
            job = Job(
                id=job_id,
                args=("true",),
                status=Status.COMPLETED,
                pid=1000 + i % 30000,
                exit_code=0,
                attempts=1,
                enqueued_at=now,
                started_at=now,
                completed_at=now,
            )
        else:
            job = Job(id=job_id, args=tuple(SLEEPER), enqueued_at=now)
        path = jobs_dir / job_id
        path.mkdir()
        (path / "meta.json").write_bytes(json.dumps(job.to_dict(), separators=(",", ":")).encode())
        if job.status is Status.COMPLETED:
            (path / "stdout.txt").write_bytes(b"")
            (path / "stderr.txt").write_bytes(b"")
        ids.append(job_id)
    return ids


def _latencies(http: Client, path_of: Callable[[int], str], count: int) -> list[float]:
    took = []
    for i in range(count):
        before = time.perf_counter()
        status, _ = http.request("GET", path_of(i))
        took.append(time.perf_counter() - before)
        if status != 200:
            raise RuntimeError(f"GET {path_of(i)} answered {status}")
    return took


def run(work: Path, limit: float, total: int, queued: int) -> list[Row]:
    idle = BenchServer(work / "empty")
    try:
        idle.wait_ready()
        time.sleep(1.0)
        threads_empty = idle.threads()
    finally:
        idle.stop()
    jobs_dir = work / "jobs"
    written = time.perf_counter()
    ids = write_jobs(jobs_dir, total, queued)
    print(f"   (wrote {total} job directories in {time.perf_counter() - written:.1f} s)", flush=True)
    label = f"{total:,} jobs, {queued:,} queued"
    server = BenchServer(jobs_dir, ready_timeout_s=120)
    try:
        ready_s = server.wait_ready(120)
        time.sleep(1.0)  # let the first jobs start and the server settle
        rows = [
            Row("5 scale", f"start to ready, {label}", f"{ready_s:.2f} s", ready_s / 5, "target", "< 5 s", ready_s < 5),
        ]
        picks = random.Random(5).choices(ids, k=READS)
        with server.client() as http:
            status_p99 = percentile(_latencies(http, lambda i: f"/jobs/{picks[i]}/status", READS), 99)
            list_status, _ = http.request("GET", "/jobs?limit=50")
            if list_status in (404, 405):
                list_row = Row(
                    "5 scale", "GET /jobs first page p99", f"needs GET /jobs (server answered {list_status})"
                )
            else:
                list_p99 = percentile(_latencies(http, lambda i: "/jobs?limit=50", READS), 99)
                list_row = Row(
                    "5 scale",
                    f"GET /jobs?limit=50 p99, N={READS}",
                    ms(list_p99),
                    list_p99 / 0.02,
                    "target",
                    "< 20.00 ms",
                    list_p99 < 0.02,
                )
        rss = server.rss_bytes()
        threads = server.threads()
        rows += [
            Row(
                "5 scale",
                "resident memory",
                f"{rss / 2**20:.0f} MB",
                rss / (300 * 2**20),
                "target",
                "< 300 MB",
                rss < 300 * 2**20,
            ),
            Row(
                "5 scale",
                f"GET /jobs/{{id}}/status p99, N={READS}",
                ms(status_p99),
                status_p99 / 0.02,
                "target",
                "< 20.00 ms",
                status_p99 < 0.02,
            ),
            list_row,
            Row(
                "5 scale",
                f"threads with {queued:,} queued (empty server: {threads_empty})",
                str(threads),
                threads / threads_empty,
                "empty server",
                f"bounded (≤ {threads_empty} + 8)",
                threads <= threads_empty + 8,  # 2 running jobs: a Supervisor and a waiter thread each
            ),
        ]
    finally:
        server.stop()
    return rows
