"""Cluster mode through the HTTP API: jobs/s of 1, 2 and 3 nodes on one PostgreSQL against the single
SQLite node in the same run (each node --workers W; batches of `true` jobs submitted round-robin over
the nodes; the clock stops when the database counts them all COMPLETED), the database connections of
each node during those runs (pg_stat_activity, by application_name), and failover after a SIGKILL of
the node running a job. `python -m bench.cluster_nodes [--jobs 600] [--workers 2]` prints one table."""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
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


TAG = f"b{uuid.uuid4().hex[:6]}-"  # node names of this run: pg_stat_activity is shared with other users


class Connections:
    """Samples pg_stat_activity every 0.1 s: each node's connections (application_name "procq <node> ...")."""

    def __init__(self) -> None:
        self.peak: Counter[str] = Counter()  # node -> most connections seen at once
        self.roles: Counter[str] = Counter()  # role -> most seen at once on one node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                names = [row[0] for row in conn.execute(SAMPLE, (f"procq {TAG}%",))]
                self.count(names)

    def count(self, names: list[str]) -> Counter[str]:
        nodes: Counter[str] = Counter()
        roles: Counter[tuple[str, str]] = Counter()
        for name in names:
            node, _, role = name.removeprefix("procq ").partition(" ")
            nodes[node] += 1
            roles[(node, role or "pool")] += 1
        for node, n in nodes.items():
            self.peak[node] = max(self.peak[node], n)
        for (_, role), n in roles.items():
            self.roles[role] = max(self.roles[role], n)
        return nodes

    def now(self) -> Counter[str]:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            return Counter(self.count([row[0] for row in conn.execute(SAMPLE, (f"procq {TAG}%",))]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


SAMPLE = "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s"


def start(root: Path, count: int, workers: int, url: str | None, lease: float = 6.0) -> list[ServerProcess]:
    extra = ["--workers", str(workers), "--log-level", "WARNING"]
    root.mkdir(parents=True, exist_ok=True)  # the servers' logs go beside their jobs directories
    if url is None:
        return [ServerProcess(root / "single", *extra)]
    return [
        ServerProcess(
            root / f"n{i}", *extra, "--node-name", f"{TAG}n{i}", "--lease", str(lease), env={"PROCQ_DATABASE_URL": url}
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
        victim = nodes[0] if now["node"] == f"{TAG}n0" else nodes[1]
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
    peaks: list[tuple[int, int, int, Counter[str]]] = []
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
            sampler = Connections()
            try:
                rate = run_jobs(nodes, args.jobs)
                time.sleep(2.0)  # idle: the pool keeps what it opened, the rest is fixed
                idle = sampler.now()
            finally:
                sampler.stop()
                stop(nodes)
                drop(name)
            peaks.append((count, max(sampler.peak.values()), max(idle.values()), sampler.roles))
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
    print("\n| nodes | most database connections of one node during the run | of one node idle after it |")
    print("|---|---|---|")
    for count, peak, idle, _ in peaks:
        print(f"| {count} | {peak} | {idle} |")
    roles = Counter[str]()
    for *_, seen in peaks:
        roles |= seen
    print("\nby role, most at once on one node: " + ", ".join(f"{role} {n}" for role, n in sorted(roles.items())))
    print(f"\nfailover: SIGKILL of the node running a job → running elsewhere: {took:.2f} s (lease {args.lease:g} s)")


if __name__ == "__main__":
    main()
