"""Scenario 2, throughput: N trivial jobs until the last is COMPLETED: single POSTs from 4 client threads,
batches of 100, task-spooler and the raw spawn limit, side by side in one run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import TERMINAL, Client, epoch
from bench.limit import spawn_cost, true_command
from bench.peers import find_tsp, tsp_throughput
from bench.report import Row, ms, percentile
from bench.server import BenchServer
from procq.actors.job import IdGenerator, Job
from procq.actors.store.sqlite import SqliteStore


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
    wait_newest(http, ids, timeout_s, interval_s)
    jobs = []
    for job_id in ids:
        while (job := http.status(job_id))["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not terminal within {timeout_s} s")
            time.sleep(interval_s)
        jobs.append(job)
    return jobs


def wait_newest(http: Client, ids: list[str], timeout_s: float, interval_s: float = 0.02) -> None:
    """Poll GET /jobs/{id}/status of the newest id (the last to start: ids sort by submission and
    the queue is FIFO) until it is terminal."""
    deadline = time.monotonic() + timeout_s
    newest = max(ids)
    while http.status(newest)["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {newest} not terminal within {timeout_s} s")
        time.sleep(interval_s)


def submit_batches(server: BenchServer, args: list[str], n: int, size: int = 100) -> list[str]:
    """Submit n jobs as POST /jobs/batch of `size` from one client thread."""
    ids: list[str] = []
    with server.client() as http:
        for start in range(0, n, size):
            count = min(size, n - start)
            status, body = http.json("POST", "/jobs/batch", {"jobs": [{"args": args}] * count})
            if status != 201:
                raise RuntimeError(f"POST /jobs/batch answered {status}: {body}")
            ids += [job["id"] for job in body["jobs"]]
    return ids


def measure(
    work: Path, name: str, n: int, submit: Callable[[BenchServer, list[str], int], list[str]]
) -> tuple[float, float]:
    """(jobs/s from the first submit to the last completed_at, server CPU seconds per job) with a fresh server."""
    server = BenchServer(work / name)
    try:
        server.wait_ready()
        cpu = server.cpu_s()
        started = time.time()
        ids = submit(server, true_command(), n)
        with server.client() as http:
            wait_newest(http, ids, timeout_s=max(120, n / 10))
            # CPU before the bench reads every job once to check it (~0.7 ms of server CPU per GET):
            # that reading is the bench's, not the cost of running the jobs
            after = server.cpu_s()
            jobs = wait_terminal(http, ids, timeout_s=max(120, n / 10))
    finally:
        server.stop()
    failed = [job["id"] for job in jobs if job["status"] != "COMPLETED"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete, e.g. {failed[:3]}")
    done = max(epoch(job["completed_at"]) for job in jobs)
    return n / (done - started), (after - cpu) / n


def commit_latency(work: Path, count: int = 200) -> float:
    """Median seconds of one store commit of one new job, alone (its fsync), on the bench's disk now."""
    jobs_dir = work / "commits"
    jobs_dir.mkdir()
    store, new_id, took = SqliteStore(jobs_dir), IdGenerator(), []
    try:
        for _ in range(count):
            began = time.perf_counter()
            store.create([Job(id=new_id(), args=("true",))]).result(timeout=30)
            took.append(time.perf_counter() - began)
    finally:
        store.close()
    return percentile(took, 50)


def run(work: Path, limit: float, n: int) -> list[Row]:
    """One run, side by side: the raw spawn limit now, procq with single POSTs from 4 threads, procq
    with batches of 100, and task-spooler, all with 2 workers and `true` jobs."""
    limit_now, spawn_cpu_now = spawn_cost(true_command(), n)
    commit_s = commit_latency(work)
    single, cpu_single = measure(work, "single", n, submit_all)
    batched, cpu_batch = measure(work, "batch", n, submit_batches)
    tsp, why = find_tsp()
    tsp_rate = tsp_throughput(tsp, n) if tsp else None
    rows = [
        Row(
            "2 throughput",
            "one store commit alone (its fsync), p50, on this disk now",
            ms(commit_s),
            commit_s * limit_now,
            "one raw spawn",
        ),
        Row(
            "2 throughput",
            f"raw spawn limit now ({n} `true`, 2 threads)",
            f"{limit_now:.0f} /s",
            limit_now / limit,
            "limit",
        ),
        Row(
            "2 throughput",
            f"{n} `true` jobs, single POSTs from 4 threads, to last COMPLETED",
            f"{single:.0f} jobs/s",
            single / limit_now,
            "limit now",
        ),
        Row(
            "2 throughput",
            f"{n} `true` jobs, POST /jobs/batch of 100, to last COMPLETED",
            f"{batched:.0f} jobs/s",
            batched / limit_now,
            "limit now",
            "≥ 0.7 × limit",
            batched / limit_now >= 0.7,
        ),
        Row(
            "2 throughput",
            "server CPU per job, single POSTs (server + keeper processes, not the child)",
            f"{cpu_single * 1e6:.0f} µs",
            cpu_single / spawn_cpu_now,
            "raw spawn CPU",
            "≤ 500 µs",
            cpu_single <= 0.0005,
        ),
        Row(
            "2 throughput",
            "server CPU per job, batches of 100",
            f"{cpu_batch * 1e6:.0f} µs",
            cpu_batch / spawn_cpu_now,
            "raw spawn CPU",
            "≤ 500 µs",
            cpu_batch <= 0.0005,
        ),
    ]
    if tsp_rate is None:
        rows.append(Row("2 throughput", "task-spooler (tsp)", f"skipped: {why}"))
    else:
        rows += [
            Row(
                "2 throughput",
                f"task-spooler, {n} `true` jobs, `tsp` from 4 threads, 2 slots",
                f"{tsp_rate:.0f} jobs/s",
                tsp_rate / limit_now,
                "limit now",
            ),
            Row(
                "2 throughput",
                "procq single POSTs against task-spooler",
                f"{single / tsp_rate:.2f} ×",
                single / tsp_rate,
                "tsp",
                "≥ 1.0 × tsp",
                single >= tsp_rate,
            ),
        ]
    return rows
