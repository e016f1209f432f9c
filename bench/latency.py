"""Scenario 3, latency: POST /jobs and enqueued->started at a steady 50 submits/s with free workers."""

from __future__ import annotations

import time
from pathlib import Path

from bench.client import epoch
from bench.limit import true_command
from bench.report import Row, ms, percentile
from bench.server import BenchServer
from bench.throughput import wait_terminal


def run(work: Path, limit: float, n: int, rate_per_s: float = 50.0) -> list[Row]:
    server = BenchServer(work / "jobs")
    posts: list[float] = []
    try:
        server.wait_ready()
        with server.client() as http:
            http.submit(true_command())  # warm the connection and the server's code paths
            ids = []
            start = time.perf_counter()
            for i in range(n):
                due = start + i / rate_per_s
                while (pause := due - time.perf_counter()) > 0:
                    time.sleep(pause)
                before = time.perf_counter()
                ids.append(http.submit(true_command())["id"])
                posts.append(time.perf_counter() - before)
            jobs = wait_terminal(http, ids, timeout_s=60)
    finally:
        server.stop()
    waits = [epoch(job["started_at"]) - epoch(job["enqueued_at"]) for job in jobs]
    spawn = 1 / limit  # one raw start+reap, the unit every time below is compared with
    rows = []
    for name, values, p, target_s in (
        ("POST /jobs", posts, 50, None),
        ("POST /jobs", posts, 99, 0.003),
        ("enqueued→started", waits, 50, 0.001),
        ("enqueued→started", waits, 99, None),
    ):
        value = percentile(values, p)
        target = f"< {ms(target_s)}" if target_s else ""
        met = value < target_s if target_s else None
        rows.append(
            Row(
                "3 latency",
                f"{name} p{p} at {rate_per_s:.0f}/s, N={n}",
                ms(value),
                value / spawn,
                "one raw spawn",
                target,
                met,
            )
        )
    return rows
