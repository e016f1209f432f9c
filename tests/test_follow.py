"""GET /jobs/{id}/logs: plain reads from an offset, live following over SSE, resuming with Last-Event-ID."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from procq.api.logs import utf8_prefix
from tests.helpers import py, wait_until
from tests.sse import open_stream

# Writes 12 stamped lines to stderr over about 2.4 s; the multibyte characters test chunk boundaries.
WRITER = py(
    "import sys, time\n"
    "for i in range(12):\n"
    "    sys.stderr.write(f'{time.time():.3f} línea {i} ✓ 日本\\n'); sys.stderr.flush(); time.sleep(0.2)\n"
    "print('the result')\n"
)


def test_follow_sends_output_as_it_is_written_and_ends_with_the_final_job(start_server, jobs_dir: Path) -> None:
    server = start_server()
    job = server.submit(WRITER)
    stream = open_stream(f"{server.url}/jobs/{job['id']}/logs")
    received = b""
    lateness: list[float] = []
    while (event := stream.next())["event"] == "log":
        chunk = event["data"].encode("utf-8")
        received += chunk
        assert int(event["id"]) == len(received)  # the id is the byte offset just after this chunk
        for line in chunk.decode().splitlines():
            lateness.append(time.time() - float(line.split()[0]))
    stream.close()
    assert event["event"] == "end"
    assert event["data"]["status"] == "COMPLETED" and event["data"]["id"] == job["id"]
    assert received == (jobs_dir / job["id"] / "stderr.txt").read_bytes()
    assert len(lateness) == 12
    assert max(lateness) < 1.0, lateness  # each line arrived within a fraction of a second

    out = server.get(f"/jobs/{job['id']}/logs?stream=stdout&follow=1")
    assert b"the result" in out.content and b"event: end" in out.content


def test_resume_with_last_event_id_after_a_dropped_connection(start_server, jobs_dir: Path) -> None:
    server = start_server()
    job = server.submit(WRITER)
    url = f"{server.url}/jobs/{job['id']}/logs?follow=1"
    first = open_stream(url)
    before = b""
    for _ in range(3):
        event = first.next()
        before += event["data"].encode("utf-8")
    last_id = event["id"]
    first.close()  # the connection drops mid-job

    second = open_stream(url, headers={"Last-Event-ID": last_id})
    after = b""
    while (event := second.next())["event"] == "log":
        after += event["data"].encode("utf-8")
    second.close()
    whole = (jobs_dir / job["id"] / "stderr.txt").read_bytes()
    assert before + after == whole  # nothing repeated, nothing lost
    assert int(last_id) == len(before)


def test_plain_read_from_an_offset(start_server, jobs_dir: Path) -> None:
    server = start_server()
    job = server.submit(py("import sys; sys.stderr.write('héllo wörld'); print('out')"))
    server.wait_status(job["id"], "COMPLETED")
    whole = (jobs_dir / job["id"] / "stderr.txt").read_bytes()
    for offset in (0, 2, len(whole), len(whole) + 10):
        response = server.get(f"/jobs/{job['id']}/logs?offset={offset}")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.content == whole[offset:]
        assert response.headers["X-Next-Offset"] == str(len(whole))
    assert server.get(f"/jobs/{job['id']}/logs?stream=stdout").content == b"out\n"
    queued_unknown = server.get(f"/jobs/{'f' * 32}/logs")
    assert queued_unknown.status_code == 404
    for query in ("offset=-1", "offset=x", "stream=stdin", "follow=maybe"):
        response = server.get(f"/jobs/{job['id']}/logs?{query}")
        assert response.status_code == 400 and query.split("=")[0] in response.json()["description"]
    bad_resume = server.get(f"/jobs/{job['id']}/logs?follow=1", headers={"Last-Event-ID": "abc"})
    assert bad_resume.status_code == 400 and "Last-Event-ID" in bad_resume.json()["description"]


def test_event_streams_are_bounded_with_a_clear_503(start_server) -> None:
    server = start_server("--threads", "4", "--max-streams", "1")
    job = server.submit(py("import time; time.sleep(30)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    first = open_stream(f"{server.url}/jobs/{job['id']}/logs")
    refused = requests.get(f"{server.url}/events", timeout=10)
    assert refused.status_code == 503
    assert "--max-streams" in refused.json()["description"]
    assert server.get("/stats").status_code == 200  # ordinary requests still get a thread
    first.close()
    wait_until(lambda: _can_stream(server.url + "/events"), timeout=10)


def _can_stream(url: str) -> bool:
    with requests.get(url, stream=True, timeout=10) as response:
        return response.status_code == 200


def test_utf8_prefix_never_splits_a_character() -> None:
    text = "a✓日本é😀".encode()
    for cut in range(len(text) + 1):
        head = text[:cut]
        usable = utf8_prefix(head)
        head[:usable].decode("utf-8")  # never raises
        assert cut - usable < 4
    assert utf8_prefix(b"\xff\xfe") == 2  # not UTF-8 at all: sent as it is


def test_shutdown_ends_open_streams_promptly(start_server) -> None:
    server = start_server()
    job = server.submit(py("import time; time.sleep(30)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    follower = open_stream(f"{server.url}/jobs/{job['id']}/logs")
    events = open_stream(f"{server.url}/events")
    started = time.monotonic()
    assert server.stop() == 0
    # waitress would otherwise wait 5 s for each busy thread before giving up on it
    assert time.monotonic() - started < 4.5
    assert follower.next() is None and events.next() is None


def _open_and_close(url: str, path: str) -> int:
    """Open one event stream on its own connection, wait until it is admitted (or refused), hang up.
    Returns the status."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        data = b""
        while b"retry:" not in data and b"\r\n\r\n{" not in data and b"}" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_clients_that_open_and_close_streams_quickly_are_never_refused(start_server) -> None:
    server = start_server("--threads", "8", "--max-streams", "4")
    job = server.submit(py("import time; time.sleep(60)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    paths = ["/events", f"/jobs/{job['id']}/logs"]
    # Four clients, each with at most one stream open at a time: never more than --max-streams at once.
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda n: _open_and_close(server.url, paths[n % 2]), range(300)))
    assert statuses.count(200) == 300, {code: statuses.count(code) for code in set(statuses)}
    # Streams whose clients are still there keep their slots: the fifth is refused.
    held = [open_stream(f"{server.url}/events") for _ in range(4)]
    refused = requests.get(f"{server.url}/events", timeout=10)
    assert refused.status_code == 503 and "--max-streams" in refused.json()["description"]
    for stream in held:
        stream.close()
    server.put(f"/jobs/{job['id']}/cancel")
