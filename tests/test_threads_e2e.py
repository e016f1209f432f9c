"""The server's threads do not grow with its running jobs (a real server, real `sleep` children)."""

from __future__ import annotations

import time
from typing import Any

import psutil

from tests.helpers import ServerProcess, wait_until

FEW, MANY = 4, 64
POOL_THREADS = 4  # actors/pooled.SHARED: started as needed, so a few running jobs may not use them all


def _running(server: ServerProcess) -> int:
    return server.get("/stats").json()["counts"]["IN_PROGRESS"]


def _threads(server: ServerProcess) -> int:
    # The fewest of a few readings: a short-lived helper (a log flush, a timer) is not a job's thread.
    readings = []
    for _ in range(5):
        readings.append(psutil.Process(server.proc.pid).num_threads())
        time.sleep(0.1)
    return min(readings)


def test_sixty_four_running_jobs_cost_no_more_threads_than_four(start_server: Any) -> None:
    server = start_server("--workers", str(MANY))
    for _ in range(FEW):
        server.submit(["sleep", "600"])
    wait_until(lambda: _running(server) == FEW, timeout=30)
    few = _threads(server)
    for _ in range(MANY - FEW):
        server.submit(["sleep", "600"])
    wait_until(lambda: _running(server) == MANY, timeout=60)
    many = _threads(server)
    # A thread per job would add 60 here; the Supervisors' shared pool adds at most its own size.
    assert many - few <= POOL_THREADS, (few, many)
    assert server.stop() == 0
