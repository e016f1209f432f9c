"""GET /jobs (pages, cursors, filters), tags, DELETE /jobs/{id} and retention, on a real server."""

from __future__ import annotations

import os
from pathlib import Path

from procq.actors.dispatch.retention import remove_jobs
from procq.actors.job import Job, Status
from tests.helpers import py, wait_until

QUICK = py("pass")
SLOW = py("import time; time.sleep(30)")


def page_ids(server, query: str) -> tuple[list[str], str | None]:
    response = server.get(f"/jobs?{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    return [job["id"] for job in body["jobs"]], body["next_cursor"]


def test_paging_while_jobs_are_added_neither_skips_nor_repeats(start_server) -> None:
    server = start_server("--workers", "1")
    first = [server.submit(QUICK)["id"] for _ in range(23)]
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        ids, next_cursor = page_ids(server, f"limit=5{cursor}")
        seen += ids
        pages += 1
        for _ in range(2):  # newer jobs arrive between pages
            server.submit(QUICK)
        if next_cursor is None:
            break
        cursor = f"&cursor={next_cursor}"
    assert seen == list(reversed(first))  # newest first, each once, none of the later ones
    assert pages == 5
    newest, _ = page_ids(server, "limit=1")
    assert newest[0] > first[-1]  # a fresh listing starts with the jobs added meanwhile


def test_filters_by_status_and_tag(start_server) -> None:
    server = start_server("--workers", "1")
    blocker = server.submit(SLOW, tags=["blocker"])["id"]
    server.wait_status(blocker, "IN_PROGRESS")
    queued = [server.submit(QUICK, tags=["nightly", "team:a"])["id"] for _ in range(3)]
    canceled = server.put(f"/jobs/{queued[0]}/cancel").json()["id"]
    server.put(f"/jobs/{blocker}/cancel")
    failed = server.submit(py("raise SystemExit(4)"), tags=["team:a"])["id"]
    server.wait_status(failed, "FAILED")
    server.wait_status(queued[2], "COMPLETED")

    assert page_ids(server, "status=COMPLETED")[0] == [queued[2], queued[1]]
    assert page_ids(server, "status=FAILED&status=CANCELED")[0] == [failed, canceled, blocker]
    assert page_ids(server, "tag=team:a")[0] == [failed, *reversed(queued)]
    assert page_ids(server, "tag=nightly&status=CANCELED")[0] == [canceled]
    assert page_ids(server, "tag=nobody")[0] == []
    ids, cursor = page_ids(server, "tag=team:a&limit=2")
    assert ids == [failed, queued[2]]
    assert page_ids(server, f"tag=team:a&limit=2&cursor={cursor}") == ([queued[1], queued[0]], None)
    assert server.status(queued[1])["tags"] == ["nightly", "team:a"]


def test_bad_queries_and_tags_are_400s_naming_the_parameter(start_server) -> None:
    server = start_server()
    for query, named in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=DONE", "status"),
        ("status=COMPLETED&status=nope", "status"),
        ("cursor=%25%25%25", "cursor"),
        ("cursor=AAAA", "cursor"),
        ("tag=has%20space", "tag"),
    ]:
        response = server.get(f"/jobs?{query}")
        assert response.status_code == 400, query
        body = response.json()
        assert named in body["description"] and body["title"], (query, body)
    for tags in (["ok", "bad tag"], [f"t{i}" for i in range(17)], [""], "nightly", [1]):
        response = server.post("/jobs", json={"args": QUICK, "tags": tags})
        assert response.status_code == 400, tags
        assert "tags" in response.json()["description"]
    assert page_ids(server, "")[0] == []  # nothing was created


def test_delete_removes_a_finished_job_and_its_directory(start_server, jobs_dir: Path) -> None:
    server = start_server()
    done = server.submit(py("print('x')"))["id"]
    running = server.submit(SLOW)["id"]
    server.wait_status(done, "COMPLETED")
    server.wait_status(running, "IN_PROGRESS")

    conflict = server.http.delete(f"{server.url}/jobs/{running}", timeout=10)
    assert conflict.status_code == 409
    assert "IN_PROGRESS" in conflict.json()["description"]
    assert (jobs_dir / running).is_dir()

    response = server.http.delete(f"{server.url}/jobs/{done}", timeout=10)
    assert response.status_code == 204 and response.content == b""
    assert server.get(f"/jobs/{done}/status").status_code == 404
    assert page_ids(server, "")[0] == [running]
    wait_until(lambda: not (jobs_dir / done).exists(), timeout=5)
    assert server.http.delete(f"{server.url}/jobs/{done}", timeout=10).status_code == 404
    assert server.http.delete(f"{server.url}/jobs/..%2F..%2Fetc", timeout=10).status_code == 404
    assert server.stop() == 0

    again = start_server()  # the deletion survives a restart
    assert page_ids(again, "")[0] == [running]
    assert again.stop() == 0


def test_retention_removes_old_finished_jobs_in_the_background(start_server, jobs_dir: Path) -> None:
    server = start_server("--retention", "2s", "--workers", "1")
    old = server.submit(py("pass"))["id"]
    running = server.submit(SLOW)["id"]
    server.wait_status(running, "IN_PROGRESS")
    queued = server.submit(QUICK)["id"]
    wait_until(lambda: server.get(f"/jobs/{old}/status").status_code == 404, timeout=10)
    assert not (jobs_dir / old).exists()
    assert [server.status(i)["status"] for i in (running, queued)] == ["IN_PROGRESS", "IN_QUEUE"]
    assert (jobs_dir / running).is_dir() and (jobs_dir / queued).is_dir()
    assert server.stop() == 0


def test_removal_never_follows_a_symlink_out_of_the_jobs_dir(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    outside = tmp_path / "precious"
    jobs_dir.mkdir()
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    planted = Job(id="0" * 32, args=("x",), status=Status.COMPLETED)
    os.symlink(outside, jobs_dir / planted.id)
    real = Job(id="1" * 32, args=("x",), status=Status.COMPLETED)
    (jobs_dir / real.id).mkdir()
    (jobs_dir / real.id / "link").symlink_to(outside)  # a link inside a job's directory
    postponed: list[list[str]] = []

    remove_jobs(jobs_dir, [planted, real], postponed.append)

    assert postponed == [[]]
    assert (outside / "data.txt").read_text() == "keep me"
    assert (jobs_dir / planted.id).is_symlink()  # left alone, not followed
    assert not (jobs_dir / real.id).exists()
    assert list((jobs_dir / ".trash").iterdir()) == []


def test_deleting_a_job_canceled_in_the_queue_keeps_the_queue_moving(start_server) -> None:
    server = start_server("--workers", "1")
    blocker = server.submit(SLOW)["id"]
    server.wait_status(blocker, "IN_PROGRESS")
    canceled = server.submit(QUICK)["id"]
    server.put(f"/jobs/{canceled}/cancel")
    assert server.http.delete(f"{server.url}/jobs/{canceled}", timeout=10).status_code == 204
    after = server.submit(QUICK)["id"]
    server.put(f"/jobs/{blocker}/cancel")
    server.wait_status(after, "COMPLETED")
    assert page_ids(server, "")[0] == [after, blocker]
    assert server.stop() == 0
