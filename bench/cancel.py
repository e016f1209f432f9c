"""Scenario 4, cancel: PUT /jobs/{id}/cancel on a running two-process tree that dies on SIGTERM."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from bench.client import Client
from bench.report import Row, ms, percentile
from bench.server import BenchServer

# A parent that starts a child and both sleep: default SIGTERM handling, so the tree dies on it.
TREE = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "time.sleep(120)",
]


def run(work: Path, limit: float, n: int) -> list[Row]:
    server = BenchServer(work / "jobs")
    took: list[float] = []
    try:
        server.wait_ready()
        with server.client() as http:
            for _ in range(n):
                job = http.submit(TREE)
                tree = _running_tree(http, job["id"])
                before = time.perf_counter()
                status, body = http.json("PUT", f"/jobs/{job['id']}/cancel")
                took.append(time.perf_counter() - before)
                if status != 200 or body["status"] != "CANCELED":
                    raise RuntimeError(f"cancel answered {status}: {body}")
                alive = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
                if alive:
                    raise RuntimeError(f"cancel answered 200 but {alive} still run")
    finally:
        server.stop()
    p50, p99 = percentile(took, 50), percentile(took, 99)
    spawn = 1 / limit
    return [
        Row(
            "4 cancel",
            f"PUT cancel → 200, 2-process tree, p50, N={n}",
            ms(p50),
            p50 / spawn,
            "one raw spawn",
            "< 50.00 ms",
            p50 < 0.05,
        ),
        Row("4 cancel", "PUT cancel → 200, p99", ms(p99), p99 / spawn, "one raw spawn"),
    ]


def _running_tree(http: Client, job_id: str) -> list[psutil.Process]:
    """Wait until the job runs and its grandchild exists, so the cancel has a whole tree to end."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = http.status(job_id)
        if job["status"] == "IN_PROGRESS":
            try:
                root = psutil.Process(job["pid"])
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            if children:
                return [root, *children]
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} did not start its tree within 30 s")
