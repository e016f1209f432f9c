"""Microbenchmarks of the store of record alone: group commit from many threads, and reads and start-up
with a million jobs. `python -m bench.store [--jobs 1000000] [--queued 10000]` prints one table."""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.report import percentile
from procq.actors.job import IdGenerator, Job, Status, timestamp, utc_now
from procq.actors.store import schema
from procq.actors.store.sqlite import DB_NAME, SqliteStore


def group_commit(work: Path, threads: int, seconds: float = 2.0) -> tuple[float, float]:
    """Each thread creates one job and waits for its commit, again and again. Returns (commits/s,
    changes per transaction): with more threads, one fsync carries more changes."""
    jobs_dir = work / f"commit-{threads}"
    jobs_dir.mkdir()
    store = SqliteStore(jobs_dir)
    new_id, now = IdGenerator(), timestamp(utc_now())
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(slot: int) -> None:
        while time.monotonic() < stop:
            store.create([Job(id=new_id(), args=("true",), enqueued_at=now)]).result(timeout=30)
            done[slot] += 1

    began = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.perf_counter() - began
    store.close()
    return sum(done) / took, sum(done) / max(1, store.transactions)


def fill(jobs_dir: Path, total: int, queued: int, queued_args: tuple[str, ...] = ("sleep", "600")) -> list[str]:
    """`total` rows straight into a new database (as a rebuild would write them), the newest `queued`
    IN_QUEUE, the rest COMPLETED; meta.json files are not written (start-up does not read them)."""
    jobs_dir.mkdir()
    SqliteStore(jobs_dir).close()  # the schema
    new_id, now = IdGenerator(), timestamp(utc_now())
    done = Job(id="0" * 32, args=("true",), status=Status.COMPLETED, exit_code=0, attempts=1, enqueued_at=now)
    done = dataclasses.replace(done, started_at=now, completed_at=now, pid=4242, tags=("nightly",))
    waiting = Job(id="0" * 32, args=queued_args, enqueued_at=now)
    templates = {s: schema.encode(j).decode() for s, j in ((Status.COMPLETED, done), (Status.IN_QUEUE, waiting))}
    ids = [new_id() for _ in range(total)]
    db = sqlite3.connect(jobs_dir / DB_NAME, isolation_level=None)
    db.execute("BEGIN")
    for start in range(0, total, 50_000):
        rows = []
        for i in range(start, min(total, start + 50_000)):
            status = Status.IN_QUEUE if i >= total - queued else Status.COMPLETED
            body = templates[status].replace("0" * 32, ids[i])
            completed = now if status is Status.COMPLETED else None
            rows.append((ids[i], status.value, "default", None, None, now, completed, 0, 1, body))
        db.executemany(schema.INSERT_JOB, rows)
        db.executemany(schema.INSERT_TAG, [("nightly", row[0]) for row in rows if row[1] == "COMPLETED"])
    db.execute("COMMIT")
    db.close()
    return ids


def reads(store: SqliteStore, ids: list[str], count: int = 500) -> dict[str, float]:
    """p99 in ms of a status lookup and of listing pages (first page, a deep page, per status, per tag)."""
    rng = random.Random(7)
    kinds = {
        "get": lambda: store.get(rng.choice(ids)),
        "page": lambda: store.page(None, None, None, None, 50),
        "page deep": lambda: store.page(None, None, None, rng.choice(ids), 50),
        "page queued": lambda: store.page({Status.IN_QUEUE}, None, None, rng.choice(ids), 50),
        "page finished": lambda: store.page(
            {Status.COMPLETED, Status.FAILED, Status.CANCELED}, None, None, rng.choice(ids), 50
        ),
        "page tag": lambda: store.page(None, "nightly", None, rng.choice(ids), 50),
    }
    found = {}
    for name, call in kinds.items():
        took = []
        for _ in range(count):
            began = time.perf_counter()
            call()
            took.append(time.perf_counter() - began)
        found[name] = percentile(took, 99) * 1000
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="fill this directory once and reuse it (skips group commit)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="procq-bench-store-"))
    million = args.keep or work / "million"
    try:
        if args.keep is None:
            for threads in (1, 4, 16, 64):
                rate, per_txn = group_commit(work, threads)
                print(f"group commit, {threads:2d} threads: {rate:8.0f} commits/s, {per_txn:6.1f} per transaction")
        began = time.perf_counter()
        if million.exists():
            with sqlite3.connect(million / DB_NAME) as db:
                ids = [row[0] for row in db.execute("SELECT id FROM jobs")]
        else:
            ids = fill(million, args.jobs, args.queued)
            print(f"filled {args.jobs:,} rows in {time.perf_counter() - began:.1f} s")
        rss_before = psutil.Process().memory_info().rss
        began = time.perf_counter()
        store = SqliteStore(million)
        startup = store.startup()
        took = time.perf_counter() - began
        rss = psutil.Process().memory_info().rss - rss_before
        print(f"open + startup: {took:.2f} s, {len(startup.queued):,} queued loaded, +{rss / 2**20:.0f} MiB RSS")
        for name, p99 in reads(store, ids).items():
            print(f"{name:14s} p99 {p99:7.2f} ms")
        store.close()
        size = sum(f.stat().st_size for f in million.glob(f"{DB_NAME}*"))
        print(f"database: {size / 2**20:.0f} MiB ({size / len(ids):.0f} bytes per job), pid {os.getpid()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
