"""Scenario 2, throughput: N trivial jobs submitted by 4 client threads, until the last is COMPLETED."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.client import TERMINAL, Client, epoch
from bench.limit import spawn_cost, true_command
from bench.report import Row
from bench.server import BenchServer


def submit_all(server: BenchServer, args: list[str], n: int, threads: int = 4) -> list[str]:
    """Submit n jobs from `threads` threads, each as fast as its keep-alive connection allows."""
    ids: list[list[str]] = [[] for _ in range(threads)]

    def work(t: int) -> None:
        with server.client() as http:
            for _ in range(n // threads + (t < n % threads)):
                ids[t].append(http.submit(args)["id"])

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [job_id for chunk in ids for job_id in chunk]


def wait_terminal(http: Client, ids: list[str], timeout_s: float, interval_s: float = 0.02) -> list[dict[str, Any]]:
    """Poll GET /jobs/{id}/status of the newest id until it is terminal (ids sort by submission and
    the queue is FIFO, so it is the last to start), then read every job once and wait out any straggler.
    Polling one id keeps the bench's load on the server to ~50 requests/s while it works."""
    deadline = time.monotonic() + timeout_s
    newest = max(ids)
    while http.status(newest)["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {newest} not terminal within {timeout_s} s")
        time.sleep(interval_s)
    jobs = []
    for job_id in ids:
        while (job := http.status(job_id))["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not terminal within {timeout_s} s")
            time.sleep(interval_s)
        jobs.append(job)
    return jobs


def run(work: Path, limit: float, n: int) -> list[Row]:
    server = BenchServer(work / "jobs")
    try:
        server.wait_ready()
        # The machine is shared: the limit of this very moment, measured with the server idle, is the fairer yardstick.
        limit_now, spawn_cpu_now = spawn_cost(true_command(), n)
        cpu = server.ps.cpu_times()
        started = time.time()
        ids = submit_all(server, true_command(), n)
        submitted = time.time()
        with server.client() as http:
            jobs = wait_terminal(http, ids, timeout_s=max(120, n / 10))
        after = server.ps.cpu_times()
        cpu_per_job = (after.user + after.system - cpu.user - cpu.system) / n
    finally:
        server.stop()
    failed = [job["id"] for job in jobs if job["status"] != "COMPLETED"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete, e.g. {failed[:3]}")
    done = max(epoch(job["completed_at"]) for job in jobs)
    rate = n / (done - started)
    submit_rate = n / (submitted - started)
    return [
        Row(
            "2 throughput",
            f"{n} `true` jobs, 4 client threads, submit to last COMPLETED",
            f"{rate:.0f} jobs/s",
            rate / limit,
            "limit",
        ),
        Row(
            "2 throughput",
            f"the same against the limit measured just before it ({limit_now:.0f} /s)",
            f"{rate:.0f} jobs/s",
            rate / limit_now,
            "limit then",
            "≥ 0.8 × limit",
            rate / limit_now >= 0.8,
        ),
        Row(
            "2 throughput",
            "server CPU per job (its own threads, not the child's)",
            f"{cpu_per_job * 1e6:.0f} µs",
            cpu_per_job / spawn_cpu_now,
            "raw spawn CPU",
        ),
        Row(
            "2 throughput",
            "POST /jobs rate during it (4 threads)",
            f"{submit_rate:.0f} /s",
            submit_rate / limit,
            "limit",
        ),
    ]
