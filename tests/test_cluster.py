"""Cluster primitives on a real PostgreSQL: claims, queue limits and resources across nodes, leases,
the sweep that reruns a lost node's jobs, and fencing of a stale node's writes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procq.actors.errors import LeaseMoved
from procq.actors.job import IdGenerator, Job, Status

psycopg = pytest.importorskip("psycopg")
from procq.actors.cluster import claim, nodes, sweep  # noqa: E402 - needs psycopg's presence checked first
from procq.actors.store.postgres import PostgresStore, connect  # noqa: E402

_new_id = IdGenerator()
QUEUED = "SELECT count(*) FROM jobs WHERE status = 'IN_QUEUE'"


def _job(**fields: object) -> Job:
    fields = {"args": ("true",), "enqueued_at": "2026-01-01T00:00:00.000000Z", **fields}
    return Job(id=_new_id(), **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(pg_url: str, jobs_dir: Path) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_url, jobs_dir, node="a")
    yield opened
    opened.close()


@pytest.fixture
def db(store: PostgresStore) -> Iterator[psycopg.Connection]:
    with connect(store.url, "procq test") as conn:
        yield conn


def _register(db: psycopg.Connection, url: str, name: str, lease_s: float = 6.0) -> nodes.NodeLease:
    lease = nodes.NodeLease(
        lambda: connect(url, f"procq {name} heartbeat"), name, f"127.0.0.1:{name}", 2, None, lease_s
    )
    lease.register()
    return lease


def _ids(claimed: list[claim.Claimed]) -> list[str]:
    return [c.job.id for c in claimed]


def test_a_claim_takes_jobs_by_priority_with_aging_then_age_and_skips_future_ones(store, db) -> None:
    old, urgent, recent = (_job(enqueued_at=f"2026-01-01T00:00:{s:02d}.000000Z") for s in (0, 30, 50))
    urgent = dataclasses.replace(urgent, priority=1)  # 30 s younger, but one priority step is worth 60 s
    later = _job(run_at="2999-01-01T00:00:00.000000Z")
    store.create([old, urgent, recent, later]).result(timeout=5)
    got = claim.claim(db, "a", 10)
    assert _ids(got) == [urgent.id, old.id, recent.id]
    first = got[0].job
    assert (first.status, first.attempts, first.started_at is not None) == (Status.IN_PROGRESS, 1, True)
    assert len({c.lease for c in got}) == 3
    assert store.get(later.id).status is Status.IN_QUEUE


def test_a_job_waits_for_every_job_it_comes_after_to_complete(store, db) -> None:
    first = _job()
    then = _job(after=(first.id,))
    store.create([first, then]).result(timeout=5)
    assert _ids(claim.claim(db, "a", 10)) == [first.id]
    assert claim.claim(db, "a", 10) == []
    lease = db.execute("SELECT lease FROM jobs WHERE id = %s", (first.id,)).fetchone()[0]
    store.hold({first.id: lease})
    store.update([dataclasses.replace(store.get(first.id), status=Status.COMPLETED, exit_code=0)]).result(timeout=5)
    assert _ids(claim.claim(db, "a", 10)) == [then.id]


def test_two_nodes_claiming_at_once_never_take_the_same_job(store, pg_url) -> None:
    jobs = [_job() for _ in range(300)]
    store.create(jobs).result(timeout=10)
    taken: dict[str, list[str]] = {"a": [], "b": []}
    both_connected = threading.Barrier(2, timeout=10)

    def take(node: str) -> None:
        with connect(pg_url, f"procq {node}") as conn:
            both_connected.wait()
            # under contention a claim may take fewer than asked (rows the other node took meanwhile
            # drop out of its result), even none: a node simply claims again at its next poll
            while got := claim.claim(conn, node, 7) or conn.execute(QUEUED).fetchone()[0]:
                if isinstance(got, list):
                    taken[node].extend(_ids(got))

    threads = [threading.Thread(target=take, args=(node,)) for node in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(taken["a"] + taken["b"]) == sorted(job.id for job in jobs)
    assert taken["a"] and taken["b"]


def test_a_queues_parallelism_and_pause_hold_across_nodes(store, db, pg_url) -> None:
    store.create([_job(queue="gpu") for _ in range(6)] + [_job() for _ in range(2)]).result(timeout=5)
    claim.set_queue(db, "gpu", parallelism=3)
    with connect(pg_url, "procq b") as other:
        got_a = claim.claim(db, "a", 2)
        got_b = _claim_until(other, "b", 10, 5 - len(got_a))
    running = db.execute("SELECT count(*) FROM jobs WHERE queue = 'gpu' AND status = 'IN_PROGRESS'").fetchone()[0]
    assert running == 3 and len(got_a) + len(got_b) == 5
    claim.set_queue(db, "gpu", parallelism=None, paused=True)
    assert claim.claim(db, "a", 10) == []
    claim.set_queue(db, "gpu", parallelism=None, paused=False)
    assert len(_claim_until(db, "a", 10, 3)) == 3


def _claim_until(conn: psycopg.Connection, node: str, slots: int, want: int) -> list[claim.Claimed]:
    """Claim as a node does, poll after poll, until `want` jobs are taken (or 5 s pass): a claim may
    skip rows another connection holds for a moment (the store's writer marking meta.json files
    current), and the node simply claims again at its next poll."""
    got: list[claim.Claimed] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        got += claim.claim(conn, node, slots - len(got))
        time.sleep(0.02)
    return got


def test_a_job_is_claimed_only_by_a_node_with_the_resources_it_requires_free(store, db) -> None:
    big, small, plain = _job(), _job(), _job()
    store.create([big, small, plain]).result(timeout=5)
    for job, needs in ((big, '{"gpus": 2}'), (small, '{"gpus": 1}')):  # `requires` lands with the resources work
        db.execute(
            "UPDATE jobs SET body = body || jsonb_build_object('requires', %s::jsonb) WHERE id = %s", (needs, job.id)
        )
    assert sorted(_ids(claim.claim(db, "a", 10, free={"gpus": 1}))) == sorted([small.id, plain.id])
    assert claim.claim(db, "a", 10, free={"gpus": 1}) == []
    assert _ids(claim.claim(db, "a", 10, free={"gpus": 2})) == [big.id]


def test_jobs_that_fit_alone_but_not_together_are_put_back_unseen(store, db) -> None:
    jobs = [_job() for _ in range(3)]
    store.create(jobs).result(timeout=5)
    db.execute('UPDATE jobs SET body = body || \'{"requires": {"gpus": 1}}\'')
    got = claim.claim(db, "a", 3, free={"gpus": 2})
    assert _ids(got) == [jobs[0].id, jobs[1].id]
    assert store.get(jobs[2].id).status is Status.IN_QUEUE and store.get(jobs[2].id).attempts == 0
    assert db.execute("SELECT node, lease FROM jobs WHERE id = %s", (jobs[2].id,)).fetchone() == (None, None)
    logged = "SELECT data->>'status' FROM job_events WHERE data->>'id' = %s ORDER BY seq"  # GET /events' source
    assert [s for (s,) in db.execute(logged, (jobs[2].id,))] == ["IN_QUEUE"]
    assert [s for (s,) in db.execute(logged, (jobs[1].id,))] == ["IN_QUEUE", "IN_PROGRESS"]


def test_a_lost_nodes_job_runs_again_elsewhere_and_the_stale_node_cannot_write_it(store, db, pg_url) -> None:
    retried, last = _job(max_attempts=2), _job()
    store.create([retried, last]).result(timeout=5)
    lease_a = _register(db, pg_url, "a", lease_s=0.5)
    got = claim.claim(db, "a", 10)
    store.hold({c.job.id: c.lease for c in got})
    assert sweep.sweep(db) == []  # the lease still holds
    threading.Event().wait(0.7)  # node a stops renewing
    assert not lease_a.valid()
    settled = {s.job.id: s.job for s in sweep.sweep(db)}
    assert settled[retried.id].status is Status.IN_QUEUE and settled[retried.id].attempts == 1
    assert settled[last.id].status is Status.FAILED and "node a stopped renewing" in settled[last.id].error
    assert store.get(last.id) == settled[last.id]
    assert [n["state"] for n in nodes.view(db)] == ["lost"]
    assert not lease_a.renew() and lease_a.lost  # the lost incarnation cannot come back to life
    with connect(pg_url, "procq b") as other:
        again = claim.claim(other, "b", 10)
    assert _ids(again) == [retried.id] and again[0].job.attempts == 2
    # node a, unaware, reports its old run finished: the rerun on node b is not overwritten
    with pytest.raises(LeaseMoved):  # refused, not failed: the database answered "not yours"
        store.update([dataclasses.replace(got[0].job, status=Status.COMPLETED, exit_code=0)]).result(timeout=5)
    assert store.get(retried.id).status is Status.IN_PROGRESS and store.fenced == 1


def test_nodes_view_shows_each_nodes_slots_running_jobs_and_heartbeat(store, db, pg_url) -> None:
    store.create([_job()]).result(timeout=5)
    lease_a, lease_b = _register(db, pg_url, "a"), _register(db, pg_url, "b")
    claim.claim(db, "b", 1)
    lease_b.leave()
    view = {n["name"]: n for n in nodes.view(db)}
    assert (view["a"]["state"], view["a"]["running"], view["a"]["slots"]) == ("up", 0, 2)
    assert (view["b"]["state"], view["b"]["running"], view["b"]["address"]) == ("left", 1, "127.0.0.1:b")
    assert view["a"]["heartbeat_at"].endswith("Z")
    assert lease_a.renew()
