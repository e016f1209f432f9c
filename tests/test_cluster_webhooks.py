"""Cluster mode end to end: the completion webhooks a gone node owed are delivered by a live node, with
real servers on one real PostgreSQL schema and a real local HTTP receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Receiver, ServerProcess, end_keeper, kill_machine, py, wait_until

LEASE_S = 4.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    yield hooks
    hooks.close()


@pytest.fixture
def pair(tmp_path: Path, pg_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for name in ("n1", "n2"):
            started.append(
                ServerProcess(
                    tmp_path / name,
                    *("--node-name", name, "--workers", "1", "--lease", str(LEASE_S)),
                    *("--webhook-attempts", "50", "--webhook-backoff", "0.2", "--webhook-backoff-cap", "0.5"),
                    env={"PROCQ_DATABASE_URL": pg_url},
                )
            )
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.stop()
            end_keeper(node.jobs_dir)


def _survivor(pair: list[ServerProcess], victim: ServerProcess) -> ServerProcess:
    return next(node for node in pair if node is not victim)


def test_a_webhook_a_killed_node_had_not_delivered_is_delivered_once_by_a_live_node(
    pair: list[ServerProcess], receiver: Receiver
) -> None:
    receiver.fail_next = 10_000  # the receiver is down while the job's own node tries
    job = pair[0].submit(py("print('hello')"), webhook=receiver.url)
    done = pair[0].wait_status(job["id"], "COMPLETED", timeout=20)
    wait_until(lambda: receiver.attempts >= 2, timeout=15)
    victim = next(node for node in pair if node.jobs_dir.name == done["node"])
    kill_machine(victim)
    receiver.fail_next = 0  # the receiver is back; the job's node is not
    survivor = _survivor(pair, victim)
    (hook,) = receiver.wait_for(1, timeout=LEASE_S + 10)
    assert hook["id"] == job["id"] and hook["status"] == "COMPLETED"
    delivered = wait_until(
        lambda: (j := survivor.status(job["id"]))["webhook_delivery"]["state"] == "delivered" and j, timeout=10
    )
    assert delivered["node"] == victim.jobs_dir.name  # it ran there; only the debt moved
    time.sleep(2.5)  # the survivor's next sweeps (one a second) adopt nothing more: delivered once
    assert len(receiver.deliveries) == 1


def test_a_job_the_sweep_fails_for_a_lost_node_has_its_webhook_delivered_by_a_live_node(
    pair: list[ServerProcess], receiver: Receiver
) -> None:
    job = pair[0].submit(["sleep", "60"], webhook=receiver.url, max_attempts=1)
    running = pair[0].wait_status(job["id"], "IN_PROGRESS", timeout=20)
    victim = next(node for node in pair if node.jobs_dir.name == running["node"])
    kill_machine(victim, running["pid"])
    survivor = _survivor(pair, victim)
    failed = survivor.wait_status(job["id"], "FAILED", timeout=LEASE_S + 5)
    assert f"node {victim.jobs_dir.name}" in failed["error"]
    (hook,) = receiver.wait_for(1, timeout=10)
    assert (hook["id"], hook["status"]) == (job["id"], "FAILED")
    wait_until(lambda: survivor.status(job["id"])["webhook_delivery"]["state"] == "delivered", timeout=10)
    time.sleep(2.5)
    assert len(receiver.deliveries) == 1


def test_the_webhook_of_a_job_canceled_while_queued_is_delivered_once_by_a_live_node_when_its_node_died(
    pair: list[ServerProcess], receiver: Receiver
) -> None:
    receiver.fail_next = 10_000
    first, second = pair
    job = second.submit(["true"], webhook=receiver.url, run_at="2999-01-01T00:00:00Z")
    assert first.put(f"/jobs/{job['id']}/cancel").status_code == 200  # canceled through n1: n1 owes the webhook
    wait_until(lambda: receiver.attempts >= 2, timeout=15)
    kill_machine(first)
    receiver.fail_next = 0
    (hook,) = receiver.wait_for(1, timeout=LEASE_S + 10)
    assert (hook["id"], hook["status"]) == (job["id"], "CANCELED")
    wait_until(lambda: second.status(job["id"])["webhook_delivery"]["state"] == "delivered", timeout=10)
    time.sleep(2.5)
    assert len(receiver.deliveries) == 1
