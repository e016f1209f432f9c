"""GET /events in cluster mode: every node streams every job's state changes, whichever node made them
(actors/cluster/feed.py), on real PostgreSQL with real nodes (run.py --database-url)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from procq.actors.cluster.feed import Cursor, EventFeed
from procq.actors.store import pgschema
from tests.helpers import ServerProcess, end_keeper, wait_until
from tests.sse import EventReader, open_stream


def _node(tmp_path: Path, pg_url: str, name: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / name, "--node-name", name, "--workers", "1", "--lease", "4", env={"PROCQ_DATABASE_URL": pg_url}
    )


@pytest.fixture
def two_nodes(tmp_path: Path, pg_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for name in ("n1", "n2"):
            started.append(_node(tmp_path, pg_url, name))
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.stop()
            end_keeper(node.jobs_dir)


def _read_until(stream: EventReader, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Events up to and including the first that `done` accepts (each read bounded by the stream's timeout)."""
    seen = []
    while True:
        event = stream.next()
        assert event is not None, f"the stream ended after {seen}"
        seen.append(event)
        if done(event):
            return seen


def _changes(events: list[dict[str, Any]], job_id: str) -> list[tuple[str, str | None, str | None]]:
    return [(e["event"], e["data"].get("status"), e["data"].get("node")) for e in events if e["data"]["id"] == job_id]


def test_every_node_streams_the_changes_of_jobs_run_and_submitted_elsewhere(two_nodes: list[ServerProcess]) -> None:
    streams = [open_stream(f"{node.url}/events") for node in two_nodes]
    try:
        # a long job fills one node's only slot: the next job can only run on the other node
        long_id = two_nodes[0].submit([sys.executable, "-c", "import time; time.sleep(60)"])["id"]
        busy_name = two_nodes[0].wait_status(long_id, "IN_PROGRESS", timeout=20)["node"]
        busy, free = (two_nodes[0], two_nodes[1]) if busy_name == "n1" else (two_nodes[1], two_nodes[0])
        job_id = busy.submit([sys.executable, "-c", "print('hello')"])["id"]  # through the node that cannot run it
        busy.wait_status(job_id, "COMPLETED", timeout=20)
        assert requests.delete(f"{free.url}/jobs/{job_id}", timeout=10).status_code == 204
        free_name = "n2" if busy_name == "n1" else "n1"
        for stream in streams:
            events = _read_until(stream, lambda e: e["event"] == "deleted" and e["data"]["id"] == job_id)
            assert _changes(events, long_id) == [("job", "IN_QUEUE", None), ("job", "IN_PROGRESS", busy_name)]
            assert _changes(events, job_id) == [
                ("job", "IN_QUEUE", None),
                ("job", "IN_PROGRESS", free_name),
                ("job", "COMPLETED", free_name),
                ("deleted", None, None),
            ]
            started, ended = [e["data"] for e in events if e["data"]["id"] == job_id and e["event"] == "job"][1:3]
            assert started["started_at"] and ended["completed_at"] and ended["enqueued_at"]
            assert set(ended) == {"id", "status", "enqueued_at", "started_at", "completed_at", "node"}
    finally:
        for stream in streams:
            stream.close()


def _migrated(pg_url: str) -> psycopg.Connection:
    conn = psycopg.connect(pg_url, autocommit=True)
    pgschema.migrate(conn)
    return conn


def _log(conn: psycopg.Connection, job_id: str) -> None:
    conn.execute("INSERT INTO job_events (kind, data) VALUES ('job', jsonb_build_object('id', %s::text))", (job_id,))


def test_an_event_committed_after_a_later_one_was_read_is_still_read_once(pg_url: str) -> None:
    """A sequence value is taken before commit: event 1 may become visible after event 2 was read."""
    reader, slow, fast = _migrated(pg_url), _migrated(pg_url), _migrated(pg_url)
    cursor = Cursor()
    try:
        _log(fast, "before")
        assert cursor.read(reader) == []  # the first read is where the reader starts: history is not replayed
        with slow.transaction():
            _log(slow, "slow")  # takes its seq first, commits last
            _log(fast, "fast")
            assert [data["id"] for _, data in cursor.read(reader)] == ["fast"]
            assert cursor.read(reader) == []
        assert [data["id"] for _, data in cursor.read(reader)] == ["slow"]
        assert cursor.read(reader) == []
    finally:
        for conn in (reader, slow, fast):
            conn.close()


def test_the_trigger_logs_creation_each_change_of_state_and_deletion_but_not_other_updates(pg_url: str) -> None:
    conn = _migrated(pg_url)
    got: list[tuple[str, dict[str, Any]]] = []
    arrived = threading.Event()

    def publish(kind: str, data: Any) -> None:
        got.append((kind, dict(data)))
        arrived.set()

    feed = EventFeed(lambda: psycopg.connect(pg_url, autocommit=True), publish, poll_s=0.05)
    try:
        assert feed.ready.wait(10)
        body = '{"id": "j1", "status": "IN_QUEUE", "enqueued_at": "2026-01-01T00:00:00Z"}'
        conn.execute(
            "INSERT INTO jobs (id, status, queue, enqueued_at, owed, synced, body) "
            "VALUES ('j1', 'IN_QUEUE', 'default', '2026-01-01T00:00:00Z', 0, 0, %s::jsonb)",
            (body,),
        )
        conn.execute("UPDATE jobs SET synced = 1 WHERE id = 'j1'")  # not a change of state
        conn.execute("UPDATE jobs SET status = 'IN_QUEUE', synced = 2 WHERE id = 'j1'")  # nor is this
        conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'n9' WHERE id = 'j1'")
        conn.execute("DELETE FROM jobs WHERE id = 'j1'")
        wait_until(lambda: len(got) >= 3)
        assert [(kind, data.get("status"), data.get("node")) for kind, data in got] == [
            ("job", "IN_QUEUE", None),
            ("job", "IN_PROGRESS", "n9"),
            ("deleted", None, None),
        ]
        assert got[0][1]["enqueued_at"] == "2026-01-01T00:00:00Z"
    finally:
        feed.stop()
        conn.close()


def test_a_feed_whose_connection_is_cut_reads_on_from_where_it_stood(pg_url: str) -> None:
    conn = _migrated(pg_url)
    got: list[str] = []
    feed = EventFeed(
        lambda: psycopg.connect(pg_url, autocommit=True, application_name="procq test events"),
        lambda kind, data: got.append(data["id"]),
        poll_s=0.05,
    )
    try:
        assert feed.ready.wait(10)
        _log(conn, "first")
        wait_until(lambda: got == ["first"])
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'procq test events'"
        )
        _log(conn, "while cut")  # committed while the feed has no connection (or before it notices)
        _log(conn, "after")
        wait_until(lambda: len(got) >= 3)
        assert got == ["first", "while cut", "after"]
    finally:
        feed.stop()
        conn.close()


def test_events_older_than_the_kept_time_are_pruned(pg_url: str) -> None:
    conn = _migrated(pg_url)
    _log(conn, "old")
    feed = EventFeed(lambda: psycopg.connect(pg_url, autocommit=True), lambda kind, data: None, keep_s=0.3)
    try:
        wait_until(lambda: conn.execute("SELECT count(*) FROM job_events").fetchone()[0] == 0)
    finally:
        feed.stop()
        conn.close()
