"""How cluster nodes reach each other through PostgreSQL: self-fencing on a cut network, NOTIFY hints
with a listener that comes back, cancels through any node, finished output kept for every node."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procq.actors.job import IdGenerator, Job, Status
from tests.tcpproxy import TcpProxy

psycopg = pytest.importorskip("psycopg")
from procq.actors.cluster import cancels, claim, hints, nodes, outputs, sweep  # noqa: E402
from procq.actors.store.postgres import PostgresStore, connect  # noqa: E402

_new_id = IdGenerator()


def _job(**fields: object) -> Job:
    return Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z", **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(pg_url: str, jobs_dir: Path) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_url, jobs_dir, node="a")
    yield opened
    opened.close()


@pytest.fixture
def db(store: PostgresStore) -> Iterator[psycopg.Connection]:
    with connect(store.url, "procq test") as conn:
        yield conn


def test_a_node_cut_off_from_the_database_stops_its_jobs_before_another_node_may_take_them(store, db) -> None:
    proxy = TcpProxy(5432)
    url = store.url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    lease = nodes.NodeLease(lambda: connect(url, "procq p heartbeat"), "p", "127.0.0.1:1", 2, None, 2.0, 0.7)
    lease.register()
    job = _job(max_attempts=2)
    store.create([job]).result(timeout=5)
    assert [c.job.id for c in claim.claim(db, "p", 1)] == [job.id]
    fenced_at: list[float] = []
    beat = nodes.Heartbeat(lease, lambda why: fenced_at.append(time.monotonic()), every_s=0.3)
    try:
        time.sleep(1.0)
        assert not beat.fenced.is_set()  # renewals flow through the proxy
        proxy.cut()
        settled_at = None
        deadline = time.monotonic() + 10
        while settled_at is None and time.monotonic() < deadline:
            if sweep.sweep(db):  # what any other node does about once a second
                settled_at = time.monotonic()
            time.sleep(0.05)
        assert settled_at is not None and fenced_at, "the job was never freed, or the node never fenced"
        assert fenced_at[0] < settled_at
        assert store.get(job.id).status is Status.IN_QUEUE
    finally:
        proxy.heal()
        beat.stop()
        proxy.close()


def test_a_hint_wakes_a_waiting_node_and_a_listener_whose_connection_died_listens_again(store, db) -> None:
    listener = hints.Listener(lambda: connect(store.url, "procq test listener"), poll_s=5.0)
    try:
        assert listener.listening.wait(5)
        listener.wait(0.01)  # the wake-up every new LISTEN gives
        db.execute("SELECT pg_notify(%s, '')", (hints.JOBS,))
        assert listener.wait()
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'procq test listener'"
        )
        end = time.monotonic() + 10
        while listener.relistens < 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert listener.relistens == 1 and listener.listening.wait(5)
        listener.wait(0.01)
        db.execute("SELECT pg_notify(%s, '')", (hints.JOBS,))
        assert listener.wait()
    finally:
        listener.stop()


def test_without_listen_a_node_polls_and_many_pokes_make_few_notifies(store) -> None:
    polling = hints.Listener(lambda: connect(store.url, "procq test"), poll_s=0.1, listen=False)
    assert polling.wait() is False  # nothing to hear: the poll interval passed
    listener = hints.Listener(lambda: connect(store.url, "procq test listener"), poll_s=5.0)
    notifier = hints.Notifier(lambda: connect(store.url, "procq test notifier"), gap_s=0.05)
    try:
        assert listener.listening.wait(5)
        listener.wait(0.01)
        for _ in range(2_000):
            notifier.poke()
        assert listener.wait()
        time.sleep(0.2)
        assert 1 <= notifier.sent <= 20  # batched: one NOTIFY per gap, never one per job
    finally:
        notifier.stop()
        listener.stop()


def test_a_cancel_through_one_node_reaches_the_node_that_runs_the_job(store, db) -> None:
    running, queued = _job(), _job()
    store.create([running]).result(timeout=5)
    [claimed] = claim.claim(db, "b", 1)
    store.create([queued]).result(timeout=5)
    listener_b = hints.Listener(lambda: connect(store.url, "procq b listener"), (hints.CANCELS,), poll_s=5.0)
    try:
        assert listener_b.listening.wait(5)
        listener_b.wait(0.01)
        with connect(store.url, "procq a") as node_a:
            assert cancels.request(node_a, running.id) == "b"
            assert cancels.request(node_a, queued.id) is None  # not running: node a cancels it itself
            assert listener_b.wait()
            assert cancels.pending(db, "b") == [(running.id, claimed.lease)]
            assert not cancels.wait_answered(node_a, running.id, 0.2)
            threading.Timer(0.3, cancels.answer, args=(db, running.id)).start()  # node b: the tree is gone
            assert cancels.wait_answered(node_a, running.id, 5)
        assert cancels.pending(db, "b") == []
    finally:
        listener_b.stop()


def test_finished_output_is_kept_whole_up_to_the_cap_and_as_a_marked_prefix_beyond(db, tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"result\n")
    big.write_bytes(bytes(range(256)) * 20)
    assert outputs.keep(db, "j1", "stdout", small, cap=1000) == outputs.Kept(b"result\n", 7, True)
    outputs.keep(db, "j2", "stdout", big, cap=1000)
    assert outputs.read(db, "j1", "stdout") == outputs.Kept(b"result\n", 7, True)
    kept = outputs.read(db, "j2", "stdout")
    assert (kept.data, kept.size, kept.complete) == (big.read_bytes()[:1000], 5120, False)
    assert outputs.read(db, "j3", "stdout") is None
