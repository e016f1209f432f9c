"""Cluster mode's parts on the local PostgreSQL, before they are wired into the server: group commit of
the PostgreSQL store against SQLite's in the same run, claims by 1, 2 and 3 nodes, claim latency with a
backlog, failover time after a node stops renewing, and connections per node.
`python -m bench.cluster [--url postgresql://postgres@127.0.0.1:5432/test]` prints one table."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from bench.report import percentile
from procq.actors.cluster import claim, hints, nodes, sweep
from procq.actors.job import IdGenerator, Job, timestamp, utc_now
from procq.actors.store.postgres import PostgresStore, connect
from procq.actors.store.sqlite import SqliteStore
from tests.pgdb import url_with_schema

FINISH = "UPDATE jobs SET status = 'COMPLETED', lease = NULL WHERE id = %s AND lease = %s"


def group_commit(store: object, threads: int = 8, seconds: float = 2.0) -> float:
    """Each thread creates one job and waits for its commit, again and again: commits/s."""
    new_id, now = IdGenerator(), timestamp(utc_now())
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(slot: int) -> None:
        while time.monotonic() < stop:
            store.create([Job(id=new_id(), args=("true",), enqueued_at=now)]).result(timeout=30)  # type: ignore[attr-defined]
            done[slot] += 1

    began = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - began)


def claims(store: PostgresStore, url: str, node_count: int, jobs: int = 3_000, slots: int = 4) -> float:
    """`node_count` nodes, each claiming `slots` at a time and finishing them at once: jobs/s."""
    new_id, now = IdGenerator(), timestamp(utc_now())
    store.create([Job(id=new_id(), args=("true",), enqueued_at=now) for _ in range(jobs)]).result(timeout=60)

    def node(name: str) -> None:
        with connect(url, f"procq bench {name}") as conn:
            while True:
                got = claim.claim(conn, name, slots)
                if not got and not conn.execute("SELECT 1 FROM jobs WHERE status = 'IN_QUEUE' LIMIT 1").fetchone():
                    return
                with conn.cursor() as cur:
                    cur.executemany(FINISH, [(c.job.id, c.lease) for c in got])

    began = time.perf_counter()
    workers = [threading.Thread(target=node, args=(f"n{i}",)) for i in range(node_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return jobs / (time.perf_counter() - began)


def claim_latency(store: PostgresStore, url: str, backlog: int = 10_000, samples: int = 300) -> tuple[float, float]:
    """One job per claim with `backlog` jobs queued: p50 and p99 in ms."""
    new_id, now = IdGenerator(), timestamp(utc_now())
    for _ in range(backlog // 5_000):
        store.create([Job(id=new_id(), args=("true",), enqueued_at=now) for _ in range(5_000)]).result(timeout=60)
    took = []
    with connect(url, "procq bench latency") as conn:
        for _ in range(samples):
            began = time.perf_counter()
            claim.claim(conn, "lat", 1)
            took.append((time.perf_counter() - began) * 1000)
    return percentile(took, 50), percentile(took, 99)


def failover(url: str, lease_s: float) -> float:
    """A node claims a job and dies (stops renewing); the others sweep once a second, as nodes do.
    Seconds from its last successful renewal until the job is queued again."""
    store = PostgresStore(url, Path(tempfile.mkdtemp()), node="dies")
    try:
        job = Job(id=IdGenerator()(), args=("true",), enqueued_at=timestamp(utc_now()), max_attempts=2)
        store.create([job]).result(timeout=5)
        lease = nodes.NodeLease(lambda: connect(url, "procq bench dies"), "dies", "-", 1, None, lease_s)
        lease.register()
        with connect(url, "procq bench others") as conn:
            claim.claim(conn, "dies", 1)
            last_renewal = time.monotonic()
            lease.renew()
            while not sweep.sweep(conn):
                time.sleep(1.0)
            return time.monotonic() - last_renewal
    finally:
        store.close()


def connections(url: str, jobs_dir: Path) -> int:
    """Connections one node holds: its store (writer + pool), heartbeat, listener and notifier."""
    store = PostgresStore(url, jobs_dir, node="count")
    lease = nodes.NodeLease(lambda: connect(url, "procq count heartbeat"), "count", "-", 1)
    lease.register()
    listener = hints.Listener(lambda: connect(url, "procq count listener"))
    notifier = hints.Notifier(lambda: connect(url, "procq count notifier"))
    try:
        listener.listening.wait(5)
        notifier.poke()
        threads = [threading.Thread(target=store.page, args=(None, None, None, None, 50)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.3)
        with psycopg.connect(url) as admin:
            return admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'procq count%%'"
            ).fetchone()[0]
    finally:
        listener.stop()
        notifier.stop()
        lease.leave()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--lease", type=float, default=6.0, help="the node lease for the failover run (s)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str]] = []

    def fresh() -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {name}")
        schemas.append(name)
        return url_with_schema(args.url, name)

    schemas: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for engine in ("sqlite", "postgres"):
                (work / engine).mkdir()
                store = SqliteStore(work / engine) if engine == "sqlite" else PostgresStore(fresh(), work / engine)
                rows.append((f"group commit, 8 threads, {engine}", f"{group_commit(store):.0f} commits/s"))
                store.close()
            for count in (1, 2, 3):
                url = fresh()
                (work / f"claims{count}").mkdir()
                store = PostgresStore(url, work / f"claims{count}")
                rows.append(
                    (f"claim + finish, {count} node(s), 4 slots each", f"{claims(store, url, count):.0f} jobs/s")
                )
                store.close()
            url = fresh()
            (work / "lat").mkdir()
            store = PostgresStore(url, work / "lat")
            p50, p99 = claim_latency(store, url)
            store.close()
            rows.append(("claim latency, 10,000 queued, p50 / p99", f"{p50:.2f} / {p99:.2f} ms"))
            rows.append(
                (f"failover, lease {args.lease:g} s, sweep every 1 s", f"{failover(fresh(), args.lease):.2f} s")
            )
            (work / "count").mkdir()
            rows.append(("connections per node (busy reads)", str(connections(fresh(), work / "count"))))
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            for name in schemas:
                admin.execute(f"DROP SCHEMA {name} CASCADE")
    print("| measure | value |\n|---|---|")
    for measure, value in rows:
        print(f"| {measure} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
