"""LISTEN/NOTIFY as a hint only, polling as the floor: a claimer waits at most `poll_s` whatever happens.

Hints are batched: at most one NOTIFY per `gap_s` however many jobs were committed (commits that each
NOTIFY serialize on PostgreSQL's notify queue lock, a few hundred per second at best). The listener
notices when its connection dies, listens again on a new one, and wakes its waiters then (hints sent
meanwhile were lost). With `listen=False` (behind PgBouncer in transaction mode, where LISTEN does not
work) the waiters simply poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("procq.cluster")

JOBS = "procq_jobs"  # new or requeued runnable jobs
CANCELS = "procq_cancels"  # a cancel request for a node (the payload names it)


class Listener:
    """Wakes `wait` on a hint from any of `channels`, or after `poll_s` at the latest."""

    def __init__(
        self,
        connect: Callable[[], Any],
        channels: tuple[str, ...] = (JOBS, CANCELS),
        poll_s: float = 0.5,
        listen: bool = True,
    ) -> None:
        self._connect = connect
        self._channels = channels
        self.poll_s = poll_s
        self._hint = threading.Event()
        self._stop = threading.Event()
        self._conn: Any = None
        self.listening = threading.Event()  # set while a LISTEN connection is up
        self.relistens = 0  # connections made after the first (tests and /metrics)
        self._thread: threading.Thread | None = None
        if listen:
            self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a hint or the poll interval (or `timeout`, if shorter). True if hinted."""
        hinted = self._hint.wait(self.poll_s if timeout is None else min(timeout, self.poll_s))
        self._hint.clear()
        return hinted

    def _run(self) -> None:
        connections = 0
        while not self._stop.is_set():
            try:
                self._conn = self._connect()
                for channel in self._channels:
                    self._conn.execute(f"LISTEN {channel}")
                connections += 1
                self.relistens = connections - 1
                self.listening.set()
                self._hint.set()  # hints sent while we were not listening are lost: look now
                while not self._stop.is_set():
                    for _ in self._conn.notifies(timeout=0.5):
                        self._hint.set()
            except Exception as exc:  # the connection died (or never came): listen again shortly
                self.listening.clear()
                if not self._stop.is_set():
                    log.warning("pg listener: %s; listening again", exc)
                    self._stop.wait(0.5)
            finally:
                self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken
                pass
            self._conn = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Notifier:
    """Sends at most one NOTIFY per channel per `gap_s`, however often `poke` is called."""

    def __init__(self, connect: Callable[[], Any], gap_s: float = 0.05) -> None:
        self._connect = connect
        self._gap_s = gap_s
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # channel -> payload
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="pg-notifier", daemon=True)
        self._thread.start()

    def poke(self, channel: str = JOBS, payload: str = "") -> None:
        with self._lock:
            self._pending[channel] = payload
        self._wake.set()

    def _run(self) -> None:
        conn: Any = None
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect()
                for channel, payload in pending.items():
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                    self.sent += 1
            except Exception as exc:  # a hint is never needed for correctness: polling finds the jobs
                log.debug("pg notifier: %s", exc)
                conn = None
            self._stop.wait(self._gap_s)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
