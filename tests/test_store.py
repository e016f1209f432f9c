"""The store of record: group commit, failures that report nothing done, meta.json kept current, rebuilds.

The tests taking `store` or `engine` hold every engine (SQLite, PostgreSQL) to one contract; the others
are about one engine's own ways (SQLite's rebuilds and locks; PostgreSQL's are in test_store_postgres.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path

import orjson
import pytest

from procq.actors.errors import StorageError
from procq.actors.job import Delivery, IdGenerator, Job, Status
from procq.actors.store import schema
from procq.actors.store.sqlite import DB_NAME, SqliteStore

_new_id = IdGenerator()


def _job(**fields: object) -> Job:
    fields = {"args": ("true",), "enqueued_at": "2026-01-01T00:00:00.000000Z", **fields}
    return Job(id=_new_id(), **fields)  # type: ignore[arg-type]


def _meta(jobs_dir: Path, job_id: str) -> Job:
    return Job.from_dict(orjson.loads((jobs_dir / job_id / "meta.json").read_bytes()))


class Engine:
    """Opens stores of one engine on one database, and reads or writes it past the store, as another
    process would."""

    def __init__(self, name: str, jobs_dir: Path, url: str | None) -> None:
        self.name, self._jobs_dir, self._url = name, jobs_dir, url
        self.opened: list = []

    def open(self):  # noqa: ANN201 - SqliteStore or PostgresStore
        if self._url is None:
            store = SqliteStore(self._jobs_dir)
        else:
            from procq.actors.store.postgres import PostgresStore

            store = PostgresStore(self._url, self._jobs_dir)
        self.opened.append(store)
        return store

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        """One statement in qmark style, on a connection of its own, committed."""
        if self._url is None:
            with sqlite3.connect(self._jobs_dir / DB_NAME) as db:
                return db.execute(sql, params).fetchall()
        import psycopg

        from procq.actors.store.pgschema import pg

        with psycopg.connect(self._url, autocommit=True) as conn:
            cur = conn.execute(pg(sql), params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, jobs_dir: Path) -> Iterator[Engine]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    made = Engine(request.param, jobs_dir, url)
    yield made
    for store in made.opened:
        store.close()


@pytest.fixture
def store(engine: Engine):  # noqa: ANN201
    return engine.open()


def test_changes_from_many_threads_are_committed_in_few_transactions(store: SqliteStore, jobs_dir: Path) -> None:
    per_thread, threads = 200, 8
    commits: list = []
    lock = threading.Lock()

    def submit() -> None:
        mine = [store.create([_job()]) for _ in range(per_thread)]
        with lock:
            commits.extend(mine)

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    done, pending = wait(commits, timeout=30)
    assert not pending and all(commit.exception() is None for commit in done)
    assert len(list(jobs_dir.glob("*/meta.json"))) == per_thread * threads
    # one transaction (one fsync) carries the changes of many callers
    assert store.transactions <= per_thread * threads // 4


def test_a_commit_is_reported_only_once_another_connection_can_read_it(store: SqliteStore, engine: Engine) -> None:
    seen: list[bool] = []
    all_seen = threading.Event()

    def check(job_id: str) -> None:
        seen.append(engine.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) != [])
        if len(seen) == 50:
            all_seen.set()

    jobs = [_job() for _ in range(50)]
    commits = [store.create([job]) for job in jobs]
    for job, commit in zip(jobs, commits, strict=True):
        commit.add_done_callback(lambda _, job_id=job.id: check(job_id))
    assert all_seen.wait(timeout=10)
    assert seen == [True] * 50


def test_a_failed_commit_raises_storage_error_and_leaves_nothing(jobs_dir: Path) -> None:
    store = SqliteStore(jobs_dir, busy_timeout_s=0.2)
    try:
        kept = _job()
        store.create([kept]).result(timeout=5)
        blocker = sqlite3.connect(jobs_dir / DB_NAME, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: our commit cannot happen
        lost = _job()
        created = store.create([lost])
        updated = store.update([dataclasses.replace(kept, status=Status.CANCELED)])
        for commit in (created, updated):
            with pytest.raises(StorageError, match="database is locked"):
                commit.result(timeout=5)
        assert not (jobs_dir / lost.id).exists() and not list(jobs_dir.glob(".new-*"))
        assert store.get(lost.id) is None
        assert store.get(kept.id).status is Status.IN_QUEUE
        assert _meta(jobs_dir, kept.id).status is Status.IN_QUEUE
        assert "database is locked" in (store.trouble() or "")
        blocker.execute("ROLLBACK")
        blocker.close()
        store.create([_job()]).result(timeout=5)
        assert store.trouble() is None
    finally:
        store.close()


def test_a_duplicate_id_fails_only_its_own_change(store: SqliteStore, jobs_dir: Path) -> None:
    first = _job()
    store.create([first]).result(timeout=5)
    twin, other = dataclasses.replace(first, args=("false",)), _job()
    commits = [store.create([twin, _job()]), store.create([other])]
    with pytest.raises(StorageError):
        commits[0].result(timeout=5)
    commits[1].result(timeout=5)
    assert _meta(jobs_dir, first.id).args == ("true",)
    assert store.get(other.id) is not None
    assert len(list(jobs_dir.glob("*/meta.json"))) == 2  # the failed change's second job left nothing


def test_meta_json_follows_each_committed_update(store: SqliteStore, jobs_dir: Path) -> None:
    job = _job(webhook="http://127.0.0.1:9/hook")
    store.create([job]).result(timeout=5)
    running = dataclasses.replace(job, status=Status.IN_PROGRESS, attempts=1)
    done = dataclasses.replace(running, status=Status.COMPLETED, exit_code=0, webhook_delivery=Delivery())
    store.update([running])
    store.update([done]).result(timeout=5)
    assert _meta(jobs_dir, job.id) == done == store.get(job.id)
    assert [owed.id for owed in store.startup().owed] == [job.id]
    assert sorted(p.name for p in (jobs_dir / job.id).iterdir()) == ["meta.json"]  # no tmp file left


def test_a_deleted_job_is_not_brought_back_by_a_late_update(store: SqliteStore, jobs_dir: Path) -> None:
    job = _job()
    store.create([job]).result(timeout=5)
    store.delete([job.id]).result(timeout=5)
    shutil.rmtree(jobs_dir / job.id)
    store.update([dataclasses.replace(job, status=Status.CANCELED)]).result(timeout=5)
    assert store.get(job.id) is None and not (jobs_dir / job.id).exists()


def test_startup_rewrites_meta_json_that_lags_behind_the_store(engine: Engine, jobs_dir: Path) -> None:
    job = _job()
    store = engine.open()
    store.create([job]).result(timeout=5)
    store.close()
    # a crash after the commit of COMPLETED but before its meta.json was written
    done = dataclasses.replace(job, status=Status.COMPLETED, exit_code=0)
    engine.execute(
        "UPDATE jobs SET status = ?, synced = 0, body = ? WHERE id = ?",
        ("COMPLETED", schema.encode(done).decode(), job.id),
    )
    assert _meta(jobs_dir, job.id).status is Status.IN_QUEUE
    startup = engine.open().startup()
    assert (startup.rewritten, startup.queued, startup.counts[Status.COMPLETED]) == (1, [], 1)
    assert _meta(jobs_dir, job.id) == done


def test_startup_lists_queued_jobs_in_submission_order_and_runs_in_flight(store: SqliteStore) -> None:
    jobs = [_job() for _ in range(5)]
    for job in reversed(jobs):
        store.create([job])
    running = dataclasses.replace(jobs[1], status=Status.IN_PROGRESS, attempts=1)
    store.update([running]).result(timeout=5)
    startup = store.startup()
    assert [job.id for job in startup.queued] == [jobs[0].id, *(job.id for job in jobs[2:])]
    assert startup.running == [running]
    assert (startup.counts[Status.IN_QUEUE], startup.counts[Status.IN_PROGRESS]) == (4, 1)


def test_a_lost_database_is_rebuilt_from_the_job_directories(jobs_dir: Path) -> None:
    store = SqliteStore(jobs_dir)
    jobs = [_job(tags=("nightly",)) for _ in range(4)]
    store.create(jobs).result(timeout=5)
    finished = dataclasses.replace(jobs[0], status=Status.FAILED, exit_code=3, completed_at="2026-01-01T00:00:01Z")
    store.update([finished]).result(timeout=5)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{jobs_dir / DB_NAME}{suffix}").unlink(missing_ok=True)
    (jobs_dir / "not-a-job").mkdir()
    store = SqliteStore(jobs_dir)
    try:
        assert store.rebuilt
        assert store.get(jobs[0].id) == finished
        startup = store.startup()
        assert [job.id for job in startup.queued] == [job.id for job in jobs[1:]]
        assert (startup.rewritten, startup.counts[Status.FAILED]) == (0, 1)
        assert [job.id for job in store.page(None, "nightly", None, None, 10)] == [job.id for job in reversed(jobs)]
        assert any("not-a-job" in warning for warning in store.warnings)
    finally:
        store.close()


def test_a_damaged_database_is_moved_aside_and_rebuilt(jobs_dir: Path) -> None:
    store = SqliteStore(jobs_dir)
    job = _job()
    store.create([job]).result(timeout=5)
    store.close()
    (jobs_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    store = SqliteStore(jobs_dir)
    try:
        assert store.rebuilt and store.get(job.id) == job
        assert list(jobs_dir.glob(f"{DB_NAME}.damaged-*"))
    finally:
        store.close()


def test_pages_go_newest_first_and_filter_by_status_owner_and_tag(store: SqliteStore) -> None:
    jobs = [_job(owner="k1" if i % 2 else None, tags=("t",) if i % 3 == 0 else ()) for i in range(10)]
    store.create(jobs).result(timeout=5)
    failed = [dataclasses.replace(job, status=Status.FAILED) for job in jobs[::4]]
    store.update(failed).result(timeout=5)
    ids = [job.id for job in jobs]
    newest = list(reversed(ids))
    assert [j.id for j in store.page(None, None, None, None, 3)] == newest[:3]
    assert [j.id for j in store.page(None, None, None, newest[2], 3)] == newest[3:6]
    both = {Status.IN_QUEUE, Status.FAILED}
    assert [j.id for j in store.page(both, None, None, newest[0], 20)] == newest[1:]
    assert [j.id for j in store.page({Status.FAILED}, None, None, None, 20)] == [ids[8], ids[4], ids[0]]
    assert [j.id for j in store.page(None, None, "k1", None, 20)] == [
        i for n, i in reversed(list(enumerate(ids))) if n % 2
    ]
    assert [j.id for j in store.page(both, "t", None, None, 20)] == [ids[9], ids[6], ids[3], ids[0]]


def test_jobs_are_found_by_idempotency_key(store: SqliteStore) -> None:
    job = _job(idempotency_key_sha256="ab" * 32, request_sha256="cd" * 32)
    store.create([job, _job()]).result(timeout=5)
    assert store.with_idempotency_key("ab" * 32) == [job]
    assert store.with_idempotency_key("ef" * 32) == []


def test_expired_lists_finished_jobs_that_owe_no_webhook(store: SqliteStore) -> None:
    old, owing, recent = _job(), _job(webhook="http://127.0.0.1:9/"), _job()
    store.create([old, owing, recent]).result(timeout=5)
    store.update(
        [
            dataclasses.replace(old, status=Status.COMPLETED, completed_at="2026-01-01T00:00:00.000000Z"),
            dataclasses.replace(
                owing, status=Status.FAILED, completed_at="2026-01-01T00:00:00.000000Z", webhook_delivery=Delivery()
            ),
            dataclasses.replace(recent, status=Status.COMPLETED, completed_at="2026-06-01T00:00:00.000000Z"),
        ]
    ).result(timeout=5)
    assert [job.id for job in store.expired("2026-03-01T00:00:00Z", 10)] == [old.id]


def test_a_closed_store_refuses_changes(engine: Engine) -> None:
    store = engine.open()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.create([_job()]).result(timeout=1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for this test and removed after it."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.name != "posix" or shutil.which("mount") is None:
        pytest.skip("needs mount(8) to make a small filesystem")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_commit_and_reports_nothing_done(small_disk: Path) -> None:
    store = SqliteStore(small_disk)
    try:
        first = _job()
        store.create([first]).result(timeout=5)
        ballast = small_disk / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last block
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        big = [_job(args=("x" * 2000,)) for _ in range(200)]
        with pytest.raises(StorageError):
            store.create(big).result(timeout=10)
        assert store.get(big[0].id) is None and not (small_disk / big[0].id).exists()
        assert store.trouble() is not None
        ballast.unlink()
        store.update([dataclasses.replace(first, status=Status.CANCELED)]).result(timeout=5)
        assert store.trouble() is None and _meta(small_disk, first.id).status is Status.CANCELED
    finally:
        store.close()


def test_meta_json_a_power_cut_emptied_is_rewritten_at_the_next_start(jobs_dir: Path) -> None:
    store = SqliteStore(jobs_dir)
    job = _job()
    store.create([job]).result(timeout=5)
    store.close()
    with sqlite3.connect(jobs_dir / DB_NAME) as db:  # as if the run never closed and the machine rebooted
        db.execute("UPDATE settings SET value = '0' WHERE name = 'clean'")
        db.execute("UPDATE settings SET value = '12345' WHERE name = 'boot'")
    (jobs_dir / job.id / "meta.json").write_bytes(b"")  # never fsynced: the file system kept it empty
    store = SqliteStore(jobs_dir)
    try:
        assert store.startup().rewritten == 1
        assert _meta(jobs_dir, job.id) == job
    finally:
        store.close()


def test_a_clean_stop_or_a_server_crash_rewrites_nothing(jobs_dir: Path) -> None:
    store = SqliteStore(jobs_dir)
    store.create([_job(), _job()]).result(timeout=5)
    store.close()
    with sqlite3.connect(jobs_dir / DB_NAME) as db:  # a crash of the server alone: same boot
        db.execute("UPDATE settings SET value = '0' WHERE name = 'clean'")
    store = SqliteStore(jobs_dir)
    try:
        assert store.startup().rewritten == 0
    finally:
        store.close()


def test_an_end_whose_output_cannot_be_made_durable_is_not_committed(store: SqliteStore, jobs_dir: Path) -> None:
    job = _job()
    store.create([job]).result(timeout=5)
    output = jobs_dir / job.id / "stdout.txt"
    output.write_bytes(b"result")
    done = dataclasses.replace(job, status=Status.COMPLETED, exit_code=0)
    assert store.update([done], sync_files=[str(output)]).result(timeout=5) == 1
    not_a_file = jobs_dir / job.id / "odd"
    not_a_file.mkdir()
    with pytest.raises(StorageError, match="durable"):
        store.update([dataclasses.replace(done, exit_code=1)], sync_files=[str(not_a_file)]).result(timeout=5)
    assert store.get(job.id) == done


def test_a_batch_whose_last_directory_cannot_be_made_leaves_no_directory_at_all(
    store: SqliteStore, jobs_dir: Path
) -> None:
    jobs = [_job() for _ in range(3)]
    (jobs_dir / f".new-{jobs[2].id}").write_text("in the way")
    with pytest.raises(StorageError, match="Could not create"):
        store.create(jobs).result(timeout=5)
    assert _job_dirs(jobs_dir) == [] and [p.name for p in jobs_dir.glob(".new-*")] == [f".new-{jobs[2].id}"]
    assert all(store.get(job.id) is None for job in jobs)


def _job_dirs(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in jobs_dir.iterdir() if not p.name.startswith("."))
