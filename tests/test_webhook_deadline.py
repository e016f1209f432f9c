"""Webhooks against a receiver that dribbles its answer one byte at a time: each delivery ends within
--webhook-timeout in all, and every kind of webhook shares one bounded pool of threads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from procq.actors import webhook
from tests.helpers import py, wait_until


class DribblingReceiver:
    """A real local HTTP receiver that reads the request, then sends its answer one byte every
    `interval_s`: each read succeeds well within any socket timeout, but the answer never ends."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self.interval_s = interval_s
        self.requests = 0
        self.open = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        with self._lock:
            self.requests += 1
            self.open += 1
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request (small: headers and a JSON body)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"X-Slow: " + b"a" * 10_000
            for byte in answer:
                if self._closing.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(self.interval_s)
        except OSError:
            pass  # the sender gave up and closed: what we want
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self._closing.set()
        self._listener.close()


@pytest.fixture
def dribbler() -> Iterator[DribblingReceiver]:
    receiver = DribblingReceiver()
    yield receiver
    receiver.close()


def test_a_dribbling_receiver_cannot_hold_a_delivery_past_its_deadline(dribbler: DribblingReceiver) -> None:
    started = time.monotonic()
    error = webhook.send(dribbler.url, b"{}", 1.0)
    elapsed = time.monotonic() - started
    assert error is not None and "deadline" in error
    # The per-read timeout (1 s) never trips: a byte comes every 0.2 s. Before the deadline, this
    # took as long as the receiver liked (10,000 bytes: 2,000 s).
    assert elapsed < 4.0, elapsed
    wait_until(lambda: dribbler.open == 0, timeout=5)  # the connection was closed, not left behind


def _threads(pid: int) -> int:
    return psutil.Process(pid).num_threads()


def test_every_kind_of_webhook_shares_one_bounded_pool_whatever_the_receiver_does(
    start_server: Any, dribbler: DribblingReceiver
) -> None:
    server = start_server(
        "--workers", "2", "--webhook-timeout", "1", "--webhook-concurrency", "2", "--webhook-attempts", "1"
    )
    baseline = _threads(server.proc.pid)
    jobs = [
        server.submit(
            py("import sys; print('x', file=sys.stderr)"),
            webhook=dribbler.url,
            webhook_events=["start", "logs", "completed"],
        )  # fmt: skip
        for _ in range(24)
    ]
    peak = baseline
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        peak = max(peak, _threads(server.proc.pid))
        states = [server.status(job["id"]) for job in jobs]
        if all(s["status"] == "COMPLETED" and s["webhook_delivery"]["state"] != "pending" for s in states):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"webhooks did not finish: {states}")
    # The Supervisors' pool (4), the webhook pool (2) and the deadline watchdog, and some slack. A thread
    # per stalled delivery would grow with the 24 jobs instead.
    assert peak - baseline <= 2 * 4 + 2 + 1 + 3, (baseline, peak)
    assert dribbler.requests >= 24 * 2  # start and completion webhooks did go out
    assert server.stop() == 0
