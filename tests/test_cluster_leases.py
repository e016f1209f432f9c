"""A node that claims a job again before its store has finished with the previous run (found by the
cluster chaos, bench/cluster_chaos.py): the old run's write and the release of its lease must not touch
the new run, or the new run's writes are refused and the job stays IN_PROGRESS for good."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from procq.actors.errors import LeaseMoved
from procq.actors.job import IdGenerator, Job, Status

psycopg = pytest.importorskip("psycopg")
from procq.actors.store.postgres import PostgresStore  # noqa: E402 - needs psycopg's presence checked first

_new_id = IdGenerator()


def test_the_end_of_a_run_neither_writes_under_nor_releases_the_lease_of_the_jobs_next_run(
    pg_url: str, tmp_path: Path
) -> None:
    store = PostgresStore(pg_url, tmp_path, node="a", claims=True)
    try:
        job = Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z", max_attempts=3)
        store.create([job]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # node a claimed it under lease 1
            conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'a', lease = 1 WHERE id = %s", (job.id,))
        store.hold({job.id: 1})
        retry = dataclasses.replace(job, status=Status.IN_QUEUE, attempts=1)
        with psycopg.connect(pg_url) as blocker:  # holds the writer back, as a busy writer would be
            blocker.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
            commit = store.update([retry])  # run 1 ended: back in the queue for a retry
            time.sleep(0.3)  # the writer is now waiting for the row
            store.hold({job.id: 2})  # meanwhile this node claimed the job again (run 2, lease 2)
        assert commit.result(timeout=5) == 1  # written under lease 1, the lease the run held
        assert store.get(job.id) == retry and store.fenced == 0
        assert store.lease_of(job.id) == 2  # run 2 keeps its lease: its own writes will go through
    finally:
        store.close()


def test_a_node_does_not_claim_again_a_job_whose_last_run_there_it_has_not_finished_handling(
    pg_url: str, tmp_path: Path
) -> None:
    """The run's end is committed (the job is queued for its retry) before the Dispatcher hears of it:
    claimed again by the same node meanwhile, the old run's handling put the new run back in the queue
    and another node ran the same attempt a second time."""
    from procq.actors.cluster.node import ClusterNode

    store = PostgresStore(pg_url, tmp_path, node="a", claims=True)
    node = ClusterNode(store, "a", "http://127.0.0.1:1", slots=2, lease_s=6.0)
    try:
        job = Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z", max_attempts=3)
        store.create([job]).result(timeout=5)
        node.join()
        node.running(job.id, lambda: None)  # its run here ended, committed, not yet handled
        assert node.claim(2, {}) == []
        node.done(job.id)  # the Dispatcher handled the end
        assert [c.job.id for c in node.claim(2, {})] == [job.id]
    finally:
        node.lease.leave()
        store.close()


def test_a_refused_end_stays_refused_when_written_again_after_the_rerun_finished(pg_url: str, tmp_path: Path) -> None:
    """A stale node's end record is refused (another node reruns the job); its Supervisor writes it
    again later: once the rerun has finished (its row holds no lease), it must still be refused."""
    store = PostgresStore(pg_url, tmp_path, node="a", claims=True)
    try:
        job = Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z", max_attempts=3)
        store.create([job]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # node a ran it under lease 1; node b took it over
            conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'b', lease = 2 WHERE id = %s", (job.id,))
        store.hold({job.id: 1})
        stale = dataclasses.replace(job, status=Status.FAILED, attempts=1, error="stale end")
        with pytest.raises(LeaseMoved):
            store.update([stale]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # node b's rerun COMPLETED
            conn.execute("UPDATE jobs SET status = 'COMPLETED', lease = NULL WHERE id = %s", (job.id,))
        with pytest.raises(LeaseMoved):  # written again: still node a's stale end
            store.update([stale]).result(timeout=5)
        assert store.fenced == 2 and store.get(job.id).error != "stale end"
    finally:
        store.close()


def test_a_change_with_one_refused_job_commits_the_others_and_names_the_refused_one(
    pg_url: str, tmp_path: Path
) -> None:
    """Refused is not failed: the database answered "not yours" for that job alone (LeaseMoved names
    it); the rest of the change is committed."""
    store = PostgresStore(pg_url, tmp_path, node="a", claims=True)
    try:
        mine, taken = (Job(id=_new_id(), args=("true",), enqueued_at="2026-01-01T00:00:00.000000Z") for _ in "ab")
        store.create([mine, taken]).result(timeout=5)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # both ran here under lease 1; b took one over
            conn.execute("UPDATE jobs SET status = 'IN_PROGRESS', node = 'a', lease = 1")
            conn.execute("UPDATE jobs SET node = 'b', lease = 2 WHERE id = %s", (taken.id,))
        store.hold({mine.id: 1, taken.id: 1})
        ended = [dataclasses.replace(job, status=Status.COMPLETED, attempts=1, exit_code=0) for job in (mine, taken)]
        with pytest.raises(LeaseMoved) as refused:
            store.update(ended).result(timeout=5)
        assert refused.value.job_ids == [taken.id]
        assert store.get(mine.id) == ended[0] and store.get(taken.id) == taken  # refused: unchanged
    finally:
        store.close()
