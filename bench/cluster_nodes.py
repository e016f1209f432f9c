"""Cluster mode through the HTTP API: jobs/s of 1, 2 and 3 nodes on one PostgreSQL against the single
SQLite node in the same run (each node --workers W; batches of `true` jobs submitted round-robin over
the nodes; the clock stops when the database counts them all COMPLETED), and failover after a SIGKILL
of the node running a job. `python -m bench.cluster_nodes [--jobs 600] [--workers 2]` prints one table."""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from procq.actors.keeper import protocol
from tests.helpers import ServerProcess, end_keeper
from tests.pgdb import BASE_URL, url_with_schema


def run_jobs(nodes: list[ServerProcess], jobs: int, batch: int = 100) -> float:
    """Submit `jobs` `true` jobs in batches over the nodes; jobs/s until every one COMPLETED."""
    began = time.perf_counter()
    for i in range(0, jobs, batch):
        node = nodes[(i // batch) % len(nodes)]
        answer = node.post("/jobs/batch", json={"jobs": [{"args": ["true"]}] * min(batch, jobs - i)})
        assert answer.status_code == 201, answer.text
    while nodes[0].get("/stats").json()["counts"]["COMPLETED"] < jobs:
        time.sleep(0.05)
    return jobs / (time.perf_counter() - began)


def start(root: Path, count: int, workers: int, url: str | None, lease: float = 6.0) -> list[ServerProcess]:
    extra = ["--workers", str(workers), "--log-level", "WARNING"]
    root.mkdir(parents=True, exist_ok=True)  # the servers' logs go beside their jobs directories
    if url is None:
        return [ServerProcess(root / "single", *extra)]
    return [
        ServerProcess(
            root / f"n{i}", *extra, "--node-name", f"n{i}", "--lease", str(lease), env={"PROCQ_DATABASE_URL": url}
        )
        for i in range(count)
    ]


def stop(nodes: list[ServerProcess]) -> None:
    for node in nodes:
        if node.proc.poll() is None:
            node.stop()
        end_keeper(node.jobs_dir)


def failover(root: Path, url: str, lease: float) -> float:
    """Seconds from a SIGKILL of the node running a job (server, keeper and job) to the job running again."""
    nodes = start(root, 2, 1, url, lease)
    try:
        job = nodes[0].submit(["sleep", "60"], max_attempts=2)
        while (now := nodes[0].status(job["id"]))["pid"] is None:
            time.sleep(0.05)
        victim = nodes[0] if now["node"] == "n0" else nodes[1]
        survivor = nodes[1] if victim is nodes[0] else nodes[0]
        keeper = json.loads((victim.jobs_dir / protocol.INFO).read_text())["pid"]
        killed = time.monotonic()
        victim.proc.kill()
        for pid in (keeper, now["pid"]):
            os.kill(pid, signal.SIGKILL)
        while (again := survivor.status(job["id"]))["node"] == now["node"] or again["status"] != "IN_PROGRESS":
            time.sleep(0.05)
        return time.monotonic() - killed
    finally:
        stop(nodes)


def fresh_schema() -> tuple[str, str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name, url_with_schema(BASE_URL, name)


def drop(name: str) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease", type=float, default=6.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes = start(root / "sqlite", 1, args.workers, None)
        try:
            single = run_jobs(nodes, args.jobs)
        finally:
            stop(nodes)
        rows.append(("single node, SQLite", single, 1.0))
        for count in (1, 2, 3):
            name, url = fresh_schema()
            nodes = start(root / f"pg{count}", count, args.workers, url)
            try:
                rate = run_jobs(nodes, args.jobs)
            finally:
                stop(nodes)
                drop(name)
            rows.append((f"{count} node{'s' if count > 1 else ''}, PostgreSQL", rate, rate / single))
        name, url = fresh_schema()
        try:
            took = failover(root / "failover", url, args.lease)
        finally:
            drop(name)
    print(f"| setup ({args.jobs} `true` jobs, --workers {args.workers} per node) | jobs/s | × single node |")
    print("|---|---|---|")
    for label, rate, ratio in rows:
        print(f"| {label} | {rate:.0f} | {ratio:.2f} |")
    print(f"\nfailover: SIGKILL of the node running a job → running elsewhere: {took:.2f} s (lease {args.lease:g} s)")


if __name__ == "__main__":
    main()
