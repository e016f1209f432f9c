"""A wall-clock bound on one whole HTTP exchange (connect, send, every read of the answer).

A socket timeout bounds each read, so a receiver that dribbles a byte a second never trips it. Here
one watchdog thread (for the whole process) shuts down the sockets of every exchange that is past its
deadline, which wakes the blocked read at once; the exchange then fails like a dropped connection.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


class Deadline:
    """When one exchange must be over, and the connections it opened (urllib3 connections: their
    `sock` is read at expiry, so a socket wrapped in TLS after connecting is the one shut down)."""

    def __init__(self, timeout_s: float) -> None:
        self.at = time.monotonic() + timeout_s
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[tuple[Any, socket.socket]] = []
        self._done = False

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def watch(self, connection: Any, sock: socket.socket) -> None:
        with self._lock:
            self._connections.append((connection, sock))

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._connections.clear()

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for connection, raw in self._connections:
                for sock in (getattr(connection, "sock", None), raw):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                    except (OSError, AttributeError):
                        pass  # already closed, detached into a TLS socket, or never set


@contextmanager
def bounded(timeout_s: float) -> Iterator[Deadline]:
    """Run the block's HTTP exchange under a deadline: connections opened in this thread meanwhile
    (netguard's connect) are watched and shut down when it passes."""
    deadline = Deadline(timeout_s)
    _local.current = deadline
    _watchdog().add(deadline)
    try:
        yield deadline
    finally:
        _local.current = None
        deadline.finish()


def current() -> Deadline | None:
    """The deadline of the exchange this thread is making, if any."""
    return getattr(_local, "current", None)


class _Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="webhook-deadlines").start()

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
            deadline.expire()


_lock = threading.Lock()
_instance: list[_Watchdog] = []


def _watchdog() -> _Watchdog:
    with _lock:
        if not _instance:
            _instance.append(_Watchdog())
        return _instance[0]
