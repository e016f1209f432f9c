"""The Python client against a real server: every method, its errors, and waiting and following live."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procq.client import (
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Job,
    JobNotFound,
    Unauthorized,
    WaitTimeout,
)
from tests.features import create_admin_key, require_submit_field
from tests.helpers import ServerProcess, py
from tests.proxies import CuttingProxy, LossyProxy

# Writes five stderr lines 0.4 s apart, then its result: long enough to watch it happen.
WRITER = py(
    "import sys, time\n"
    "for i in range(5):\n"
    "    print(f'line {i}', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.4)\n"
    "print('done')"
)
SLEEPER = py("import time; time.sleep(60)")


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=10) as c:
        yield c


def count_requests(client: Client) -> list[str]:
    """Record "METHOD path" of every answer the client receives (requests' response hook)."""
    seen: list[str] = []
    client._session.hooks["response"].append(lambda r, *a, **k: seen.append(f"{r.request.method} {r.request.path_url}"))
    return seen


def test_submit_returns_the_created_job_and_status_reports_it(client: Client) -> None:
    job = client.submit(py("print('hi')"), mime_type="text/csv", tags=["client", "smoke"])
    assert isinstance(job, Job)
    assert job.args == py("print('hi')")
    assert (job.mime_type, job.tags) == ("text/csv", ["client", "smoke"])
    assert job.status in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert client.status(job.id).id == job.id
    assert job.to_dict()["id"] == job.id  # the raw JSON is kept, unknown fields included


def test_wait_follows_events_through_every_state_without_polling(client: Client) -> None:
    job = client.submit(py("import time; time.sleep(1.5)"))
    requests_seen = count_requests(client)
    changes: list[str] = []
    done = client.wait(job.id, timeout=20, on_change=lambda j: changes.append(j.status))
    assert done.status == "COMPLETED" and done.exit_code == 0
    assert changes[-1] == "COMPLETED" and "IN_PROGRESS" in changes
    status_calls = [r for r in requests_seen if r.endswith("/status")]
    # one look after subscribing plus one per state change: a poller would have asked every few ms
    assert len(status_calls) <= 4, requests_seen
    assert "GET /events" in requests_seen


def test_wait_on_a_finished_job_returns_at_once(client: Client) -> None:
    job = client.submit(py("raise SystemExit(4)"))
    first = client.wait(job.id, timeout=20)
    started = time.monotonic()
    again = client.wait(job.id, timeout=20)
    assert time.monotonic() - started < 2
    assert (again.status, again.exit_code) == (first.status, first.exit_code) == ("FAILED", 4)


def test_wait_gives_up_at_its_timeout_with_the_last_state(client: Client) -> None:
    job = client.submit(SLEEPER)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 5
    assert caught.value.job.status in ("IN_QUEUE", "IN_PROGRESS")
    assert client.cancel(job.id).status == "CANCELED"


def test_logs_follow_yields_chunks_while_the_job_writes_and_ends_with_it(client: Client) -> None:
    job = client.submit(WRITER)
    arrivals: list[tuple[float, str]] = []
    for chunk in client.logs(job.id, follow=True):
        arrivals.append((time.monotonic(), chunk))
    text = "".join(chunk for _, chunk in arrivals)
    assert text == "".join(f"line {i}\n" for i in range(5))
    assert arrivals[-1][0] - arrivals[0][0] >= 1.0  # they came as written, not all at the end
    assert client.status(job.id).status == "COMPLETED"  # the iterator ended because the job did


def test_logs_follow_resumes_a_cut_stream_without_losing_or_repeating_a_byte(server: ServerProcess) -> None:
    proxy = CuttingProxy(server.url)
    try:
        job = server.submit(WRITER)
        with Client(proxy.url, backoff_s=0.05) as c:
            text = "".join(c.logs(job["id"], follow=True))
    finally:
        proxy.close()
    assert text == "".join(f"line {i}\n" for i in range(5))
    assert len(proxy.last_event_ids) >= 2 and proxy.last_event_ids[0] is None
    assert proxy.last_event_ids[1] == proxy.cut_after_id  # resumed right after the last event it got


def test_logs_without_follow_returns_what_is_written_from_an_offset(client: Client) -> None:
    quick = WRITER[:-1] + [WRITER[-1].replace("time.sleep(0.4)", "pass")]
    job = client.wait(client.submit(quick).id, timeout=20)
    assert "".join(client.logs(job.id)) == "".join(f"line {i}\n" for i in range(5))
    assert "".join(client.logs(job.id, offset=7)) == "".join(f"line {i}\n" for i in range(1, 5))
    assert "".join(client.logs(job.id, stream="stdout")) == "done\n"


def test_result_and_result_to_return_the_exact_bytes(client: Client, tmp_path: Path) -> None:
    code = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 1000)"
    job = client.wait(client.submit(py(code), mime_type="application/octet-stream").id, timeout=20)
    assert client.result(job.id) == bytes(range(256)) * 1000
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "result.bin"
    assert client.result_to(job.id, target) == 256_000
    assert target.read_bytes() == bytes(range(256)) * 1000
    assert [p.name for p in target.parent.iterdir()] == ["result.bin"]  # no partial file left behind


def test_result_of_a_failed_job_is_a_conflict_naming_its_state(client: Client, tmp_path: Path) -> None:
    job = client.wait(client.submit(py("raise SystemExit(2)")).id, timeout=20)
    with pytest.raises(Conflict) as caught:
        client.result(job.id)
    assert caught.value.status == 409 and "FAILED" in caught.value.description
    (tmp_path / "out").mkdir()
    with pytest.raises(Conflict):
        client.result_to(job.id, tmp_path / "out" / "never")
    assert not list((tmp_path / "out").iterdir())


def test_cancel_ends_a_running_job_and_a_second_cancel_is_a_conflict(client: Client, server: ServerProcess) -> None:
    job = client.submit(SLEEPER)
    server.wait_status(job.id, "IN_PROGRESS")
    canceled = client.cancel(job.id)
    assert canceled.status == "CANCELED" and canceled.completed_at
    with pytest.raises(Conflict) as caught:
        client.cancel(job.id)
    assert "CANCELED" in str(caught.value)


def test_list_iterates_over_every_page_and_filters(client: Client) -> None:
    ids = [client.submit(py("pass"), tags=["batch"]).id for _ in range(5)]
    other = client.submit(py("raise SystemExit(1)"), tags=["other"]).id
    for job_id in [*ids, other]:
        client.wait(job_id, timeout=20)
    requests_seen = count_requests(client)
    batch = [job.id for job in client.list(tag="batch", page_size=2)]
    assert batch == ids[::-1]  # newest first, across three pages
    assert len([r for r in requests_seen if r.startswith("GET /jobs?")]) == 3
    assert [job.id for job in client.list(status="FAILED")] == [other]
    assert [job.id for job in client.list(status=["FAILED", "COMPLETED"], limit=2)] == [other, ids[-1]]


def test_delete_removes_a_finished_job_and_refuses_a_running_one(client: Client, server: ServerProcess) -> None:
    finished = client.wait(client.submit(py("pass")).id, timeout=20)
    client.delete(finished.id)
    with pytest.raises(JobNotFound):
        client.status(finished.id)
    running = client.submit(SLEEPER)
    with pytest.raises(Conflict):
        client.delete(running.id)
    client.cancel(running.id)


def test_errors_carry_the_servers_status_and_description(client: Client) -> None:
    with pytest.raises(JobNotFound) as caught:
        client.status("0" * 32)
    assert caught.value.status == 404 and "0" * 32 in caught.value.description
    with pytest.raises(BadRequest) as bad:
        client.submit([])
    assert bad.value.status == 400 and "args" in bad.value.description
    with pytest.raises(BadRequest) as wrong:
        client.submit(["echo"], priority_typo=1)
    assert "priority_typo" in wrong.value.description


def test_an_unreachable_server_is_a_connection_failure(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # a port nobody listens on once the socket closes
    with Client(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01) as c, pytest.raises(ConnectionFailed) as caught:
        c.status("0" * 32)
    assert caught.value.status is None and str(port) in str(caught.value)


def test_stats_and_events_show_what_the_server_does(client: Client) -> None:
    events = client.events()
    job = client.submit(py("pass"))
    seen = []
    for change in events:
        if change["id"] == job.id:
            seen.append(change["status"])
        if seen and seen[-1] == "COMPLETED":
            break
    events.close()
    assert seen[-1] == "COMPLETED"
    stats = client.stats()
    assert stats["counts"]["COMPLETED"] >= 1 and stats["workers"]["total"] == 2


def test_submit_sends_priority_delay_and_timeout(client: Client, server: ServerProcess) -> None:
    require_submit_field(server, "priority", 1)
    job = client.submit(py("pass"), priority=7, delay_seconds=0.5, timeout_seconds=30, queue="batch")
    assert (job.priority, job.timeout_seconds, job.queue) == (7, 30, "batch")
    assert job.run_at is not None and job.time("run_at") > job.time("enqueued_at")
    done = client.wait(job.id, timeout=20)
    assert done.status == "COMPLETED" and done.time("started_at") >= job.time("run_at")


def test_rerun_makes_a_new_job_from_the_same_request(client: Client, server: ServerProcess) -> None:
    require_submit_field(server, "priority", 1)
    first = client.wait(client.submit(py("print('again')")).id, timeout=20)
    second = client.rerun(first.id)
    assert second.id != first.id and second.rerun_of == first.id and second.args == first.args
    assert client.wait(second.id, timeout=20).status == "COMPLETED"
    assert client.result(second.id) == b"again\n"


def test_submit_is_retried_with_one_idempotency_key_after_a_lost_answer(client: Client, server: ServerProcess) -> None:
    """A proxy forwards the first POST /jobs and then drops the connection before answering: the
    client must retry, and the server must recognise the retry, so exactly one job exists."""
    probe = [server.post("/jobs", json={"args": py("pass")}, headers={"Idempotency-Key": "probe"}) for _ in "ab"]
    assert probe[0].json()["id"] == probe[1].json()["id"]  # the server recognises a repeated key
    proxy = LossyProxy(server.url)
    try:
        with Client(proxy.url, backoff_s=0.05) as c:
            job = c.submit(py("pass"), tags=["once"])
        assert proxy.posts == 2 and len(set(proxy.keys)) == 1
        assert [j.id for j in client.list(tag="once")] == [job.id]
    finally:
        proxy.close()


def test_job_tolerates_fields_it_does_not_know() -> None:
    job = Job.from_dict({"id": "a" * 32, "args": ["x"], "status": "COMPLETED", "shiny_new_field": {"x": 1}})
    assert job.terminal and job.to_dict()["shiny_new_field"] == {"x": 1}


def test_wait_reports_a_job_that_does_not_exist(client: Client) -> None:
    with pytest.raises(JobNotFound):
        client.wait("f" * 32, timeout=5)


def test_keys_are_created_listed_and_revoked_and_errors_say_401_or_403(start_server, jobs_dir: Path) -> None:
    admin_key = create_admin_key(jobs_dir)
    server = start_server()
    with Client(server.url) as anonymous, pytest.raises(Unauthorized) as refused:
        anonymous.list(limit=1).__next__()
    assert refused.value.status == 401
    with Client(server.url, key=admin_key) as admin:
        worker_key = admin.create_key("worker", ["jobs:submit", "jobs:read"])
        assert worker_key.key and worker_key.scopes == ["jobs:submit", "jobs:read"]
        assert {"admin", "worker"} <= {key.name for key in admin.list_keys()}
        assert all(key.key is None for key in admin.list_keys())  # secrets are shown once, at creation
        with Client(server.url, key=worker_key.key) as worker:
            job = worker.submit(py("pass"))
            assert worker.wait(job.id, timeout=20).status == "COMPLETED"
            assert admin.status(job.id).owner == worker_key.id
            with pytest.raises(Forbidden) as forbidden:
                worker.cancel(job.id)  # needs jobs:cancel
            assert forbidden.value.status == 403 and forbidden.value.description
            admin.revoke_key(worker_key.id)
            with pytest.raises(Unauthorized):
                worker.status(job.id)
