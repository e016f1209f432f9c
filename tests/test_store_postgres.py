"""The PostgreSQL store's own ways: migrations several nodes run at once, a dropped connection, fenced writes.
(The contract it shares with SQLite is tested in test_store.py, on both engines.)"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path

import pytest

from procq.actors.errors import LeaseMoved, StorageError
from procq.actors.job import IdGenerator, Job, Status

psycopg = pytest.importorskip("psycopg")
from procq.actors.store import pgschema  # noqa: E402 - needs psycopg's presence checked first
from procq.actors.store.postgres import PostgresStore  # noqa: E402

_new_id = IdGenerator()


def _job(**fields: object) -> Job:
    return Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z", **fields)  # type: ignore[arg-type]


def test_nodes_starting_together_migrate_the_database_once(pg_url: str, tmp_path: Path) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start(n: int) -> None:
        (tmp_path / f"n{n}").mkdir()
        try:
            stores.append(PostgresStore(pg_url, tmp_path / f"n{n}", node=f"n{n}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert errors == [] and len(stores) == 4
        job = _job()
        stores[0].create([job]).result(timeout=5)
        assert all(store.get(job.id) == job for store in stores)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert pgschema.migrate(conn) == pgschema.VERSION  # already there: nothing left to do
            assert conn.execute("SELECT value FROM settings WHERE name = 'version'").fetchone() == (
                str(pgschema.VERSION),
            )
    finally:
        for store in stores:
            store.close()


def test_a_dropped_writer_connection_fails_one_batch_and_the_next_commits(pg_url: str, jobs_dir: Path) -> None:
    node = f"dropped-{uuid.uuid4().hex[:8]}"  # the server is shared: end only this store's writer
    store = PostgresStore(pg_url, jobs_dir, node=node)
    try:
        store.create([_job()]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (f"procq {node} writer",),
            ).fetchall()
        assert killed == [(True,)]
        lost = _job()
        with pytest.raises(StorageError):
            store.create([lost]).result(timeout=10)
        assert store.get(lost.id) is None and not (jobs_dir / lost.id).exists()
        assert store.trouble() is not None
        kept = _job()
        store.create([kept]).result(timeout=10)
        assert store.get(kept.id) == kept and store.trouble() is None
    finally:
        store.close()


def test_a_node_that_lost_its_lease_cannot_overwrite_the_rerun(pg_url: str, jobs_dir: Path) -> None:
    store = PostgresStore(pg_url, jobs_dir, node="a")
    try:
        job = _job()
        store.create([job]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # node a claimed it under lease 1 ...
            conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'a', lease = 1 WHERE id = %s", (job.id,))
        store.hold({job.id: 1})
        running = dataclasses.replace(job, status=Status.IN_PROGRESS, attempts=1)
        store.update([running]).result(timeout=5)
        assert store.get(job.id) == running
        with psycopg.connect(pg_url, autocommit=True) as conn:  # ... lost it, and node b reran it under lease 2
            conn.execute("UPDATE jobs SET node = 'b', lease = 2 WHERE id = %s", (job.id,))
        with pytest.raises(LeaseMoved):  # refused, not failed: the database answered "not yours"
            store.update([dataclasses.replace(running, status=Status.FAILED, error="stale")]).result(timeout=5)
        assert store.get(job.id) == running and store.fenced == 1
        assert (jobs_dir / job.id / "meta.json").exists()
    finally:
        store.close()


def test_a_finished_run_gives_its_lease_back_so_any_node_may_change_the_job(pg_url: str, jobs_dir: Path) -> None:
    store = PostgresStore(pg_url, jobs_dir, node="a")
    other = PostgresStore(pg_url, jobs_dir, node="b")
    try:
        job = _job()
        store.create([job]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'a', lease = 7 WHERE id = %s", (job.id,))
        store.hold({job.id: 7})
        done = dataclasses.replace(job, status=Status.COMPLETED, exit_code=0, attempts=1)
        store.update([done]).result(timeout=5)
        assert store.lease_of(job.id) is None
        later = dataclasses.replace(done, tags=("seen",))
        other.update([later]).result(timeout=5)
        assert store.get(job.id) == later and other.fenced == 0
    finally:
        store.close()
        other.close()
