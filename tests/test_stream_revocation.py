"""Streams end within a second of their key being revoked: /events and log follows."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.helpers import py
from tests.secure_helpers import bearer, make_key

TICKER = py("import sys, time\nfor i in range(600):\n    print(i, file=sys.stderr, flush=True)\n    time.sleep(0.1)")


def _read_until_closed(response: requests.Response, closed: threading.Event) -> None:
    try:
        for _ in response.iter_content(chunk_size=None):
            pass
    except requests.RequestException:
        pass
    closed.set()


def test_streams_end_within_a_second_of_their_key_being_revoked(start_server: Any, jobs_dir: Path) -> None:
    _, admin = make_key(jobs_dir, "admin", name="admin")
    reader_id, reader = make_key(jobs_dir, "admin", name="watcher")
    server = start_server()
    job = server.post("/jobs", json={"args": TICKER}, headers=bearer(admin)).json()
    streams = [
        requests.get(f"{server.url}/events", headers=bearer(reader), stream=True, timeout=30),
        requests.get(f"{server.url}/jobs/{job['id']}/logs?follow=1", headers=bearer(reader), stream=True, timeout=30),
    ]
    closed = [threading.Event() for _ in streams]
    for response, event in zip(streams, closed, strict=True):
        assert response.status_code == 200, response.text
        threading.Thread(target=_read_until_closed, args=(response, event), daemon=True).start()
    time.sleep(0.5)
    assert not any(event.is_set() for event in closed)  # both are open and following
    assert server.http.delete(f"{server.url}/admin/keys/{reader_id}", headers=bearer(admin), timeout=10).ok
    revoked = time.monotonic()
    for event in closed:
        assert event.wait(timeout=5), "a stream went on after its key was revoked"
    assert time.monotonic() - revoked < 2.0  # within a second (+ scheduling slack on a shared machine)
    server.put(f"/jobs/{job['id']}/cancel", headers=bearer(admin))
    assert server.stop() == 0
