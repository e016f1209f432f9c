"""Scenario 5, scale: a server starting on 100,000 jobs (10,000 of them queued) and answering reads."""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.client import Client
from bench.report import Row, ms, percentile
from bench.server import BenchServer
from bench.store import fill
from procq.actors.store.sqlite import DB_NAME

# Queued jobs sleep, so the 2 workers stay busy and the rest stay queued while we measure.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
READS = 200


def write_jobs(jobs_dir: Path, total: int, queued: int) -> list[str]:
    """`total` jobs in the store (the oldest COMPLETED, the newest `queued` IN_QUEUE, sleeping), written
    straight into a new database as a rebuild would; only the queued ones get their directory and
    meta.json (start-up reads no directory either way; the finished ones' files would only cost set-up time)."""
    ids = fill(jobs_dir, total, queued, tuple(SLEEPER))
    with sqlite3.connect(jobs_dir / DB_NAME) as db:
        for job_id in ids[total - queued :]:
            (body,) = db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
            (jobs_dir / job_id).mkdir()
            (jobs_dir / job_id / "meta.json").write_text(body)
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
    print(f"   (wrote {total:,} jobs into the store in {time.perf_counter() - written:.1f} s)", flush=True)
    label = f"{total:,} jobs, {queued:,} queued"
    server = BenchServer(jobs_dir, ready_timeout_s=120)
    try:
        ready_s = server.wait_ready(120)
        time.sleep(1.0)  # let the first jobs start and the server settle
        rows = [
            Row("5 scale", f"start to ready, {label}", f"{ready_s:.2f} s", ready_s / 3, "target", "< 3 s", ready_s < 3),
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
                rss / (400 * 2**20),
                "target",
                "< 400 MB",
                rss < 400 * 2**20,
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
