"""Cluster-wide GET /events: how long after a commit the change shows on a node's /events stream.

Two real nodes on one PostgreSQL schema. (1) commit → event: this process plays another node's writer,
committing one finished job per transaction (a few ms apart) and timing from the commit's return to the
event on node 0's stream; once with polling alone, once with a hint after each commit (as a node's
Notifier sends for new jobs). (2) real jobs: `true` jobs submitted through node 1, from the end of
each run (its completed_at, taken just before the running node's commit) to the COMPLETED event on node
0's stream. `python -m bench.cluster_events [--commits 300] [--jobs 200]` prints one table.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.cluster_nodes import drop, fresh_schema, start, stop
from procq.actors.job import IdGenerator, Job, Status
from procq.actors.store import pgschema, schema
from tests.sse import open_stream


class Arrivals:
    """Reads a node's /events on a thread: the wall-clock time each (id, status) arrived."""

    def __init__(self, url: str) -> None:
        self.at: dict[tuple[str, str], float] = {}
        self._stream = open_stream(f"{url}/events", read_timeout=60)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (event := self._stream.next()) is not None:
                if event["event"] == "job":
                    self.at.setdefault((event["data"]["id"], event["data"]["status"]), time.time())
        except Exception:  # closed under us at the end
            return

    def wait(self, keys: list[tuple[str, str]], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(k not in self.at for k in keys) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stream.close()


def commits(url: str, arrivals: Arrivals, count: int, hint: bool) -> list[float]:
    """Seconds from each commit's return to its event on the stream."""
    new_id = IdGenerator()
    committed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url, autocommit=True) as hints:
        for _ in range(count):
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            job = Job(id=new_id(), args=("true",), status=Status.COMPLETED, enqueued_at=now, completed_at=now)
            conn.execute(pgschema.INSERT_JOB, schema.insert_row(job, schema.encode(job)))
            committed[job.id] = time.time()
            if hint:
                hints.execute("SELECT pg_notify('procq_jobs', '')")
            time.sleep(random.uniform(0.0, 0.02))
    arrivals.wait([(job_id, "COMPLETED") for job_id in committed])
    return [arrivals.at[(job_id, "COMPLETED")] - at for job_id, at in committed.items()]


def real_jobs(nodes: list, arrivals: Arrivals, count: int) -> list[float]:
    """Seconds from each run's end (completed_at) to its COMPLETED event on node 0's stream."""
    ids = []
    for _ in range(count):
        ids.append(nodes[1].submit(["true"])["id"])
        time.sleep(random.uniform(0.0, 0.02))
    arrivals.wait([(job_id, "COMPLETED") for job_id in ids])
    delays = []
    for job_id in ids:
        ended = datetime.datetime.fromisoformat(nodes[1].status(job_id)["completed_at"]).timestamp()
        delays.append(arrivals.at[(job_id, "COMPLETED")] - ended)
    return delays


def write_cost(url: str, jobs: int, batch: int = 100, rounds: int = 5) -> tuple[float, float]:
    """Seconds to insert `jobs` rows and change each one's state twice (transactions of `batch` rows, as a
    node's group commit writes them), with the event triggers and without: their cost on the write path
    (the median of `rounds` each)."""
    new_id = IdGenerator()
    took = []
    with psycopg.connect(url, autocommit=True) as conn:
        for triggers in ("ENABLE", "DISABLE") * rounds:  # alternating: the table's growth and noise hit both
            conn.execute(f"ALTER TABLE jobs {triggers} TRIGGER USER")
            began = time.perf_counter()
            for _ in range(0, jobs, batch):
                rows = [Job(id=new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00Z") for _ in range(batch)]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(pgschema.INSERT_JOB, [schema.insert_row(j, schema.encode(j)) for j in rows])
                for status in ("IN_PROGRESS", "COMPLETED"):
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(UPDATE_STATUS, [(status, status, j.id) for j in rows])
            took.append(time.perf_counter() - began)
        conn.execute("ALTER TABLE jobs ENABLE TRIGGER USER")
    return statistics.median(took[0::2]), statistics.median(took[1::2])


UPDATE_STATUS = "UPDATE jobs SET status = %s, body = body || jsonb_build_object('status', %s::text) WHERE id = %s"


def quantiles(delays: list[float]) -> str:
    ordered = sorted(delays)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{p50 * 1000:.0f} | {p99 * 1000:.0f} | {ordered[-1] * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--writes", type=int, default=3000)
    args = parser.parse_args()
    name, url = fresh_schema()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the schema, made by a node that stops at once
            stop(start(Path(tmp), 1, 1, url))
        with_triggers, without = write_cost(url, args.writes)
        with tempfile.TemporaryDirectory() as tmp:
            nodes = start(Path(tmp), 2, 2, url)
            arrivals = Arrivals(nodes[0].url)
            try:
                rows.append(
                    (
                        f"commit → event, polling only ({args.commits} commits)",
                        commits(url, arrivals, args.commits, False),
                    )
                )
                rows.append(
                    (f"commit → event, hinted ({args.commits} commits)", commits(url, arrivals, args.commits, True))
                )
                rows.append(
                    (
                        f"end of a run on node 1 → event on node 0 ({args.jobs} jobs)",
                        real_jobs(nodes, arrivals, args.jobs),
                    )
                )
            finally:
                arrivals.close()
                stop(nodes)
    finally:
        drop(name)
    print("| delay to an event on another node's GET /events | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for label, delays in rows:
        print(f"| {label} | {quantiles(delays)} |")
    print(
        f"\nwrite path, {args.writes} jobs inserted and changed twice in transactions of 100 (median of 5): "
        f"{with_triggers:.2f} s with the event triggers, {without:.2f} s without ({with_triggers / without:.2f} ×)"
    )


if __name__ == "__main__":
    main()
