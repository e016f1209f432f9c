"""Progress webhooks of one run: `start` when it starts, `logs` with the new stderr bytes as they come."""

from __future__ import annotations

import codecs
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procq.actors.supervise.sampler import output_size
from procq.actors.webhookpool import WebhookPool

log = logging.getLogger("procq.progress")

LOGS_EVERY_S = 0.5  # at most one `logs` progress webhook per job per this many seconds
MAX_LOGS_CHUNK = 64 * 1024  # bytes of stderr one `logs` webhook carries; the next one continues


@dataclass(frozen=True, slots=True)
class Progress:
    """Where and what a run reports as progress webhooks (`start`, `logs`); each is one attempt."""

    job_id: str
    attempt: int
    url: str
    events: tuple[str, ...]
    send: Callable[[str, bytes, float], str | None]
    timeout_s: float
    pool: WebhookPool | None = None  # the server's webhook threads; a private one-thread pool if None


class Reporter:
    """The progress webhooks of one run, driven by its watch thread (`started`, `tick`, `finished`).
    Each payload is one attempt, posted in order by a sender thread; failures are only logged."""

    def __init__(self, progress: Progress, stderr: Path) -> None:
        self._progress = progress
        self._sender = _Sender(progress)
        self._follower = _LogFollower(stderr, progress) if "logs" in progress.events else None

    def started(self) -> None:
        progress = self._progress
        if "start" in progress.events:
            body = {"id": progress.job_id, "event": "start", "status": "IN_PROGRESS", "attempt": progress.attempt}
            self._sender.post(body)

    def tick(self) -> None:
        if self._follower is not None:
            self._follower.tick(self._sender, final=False)

    def finish_due(self) -> float:
        """When (time.monotonic) `finished` can send the last part without waiting for the throttle."""
        return self._follower.next_due() if self._follower is not None else 0.0

    def finished(self) -> None:
        """The run is over: send the rest of its log, then let the sender thread end. Blocks up to the
        throttle (LOGS_EVERY_S) if called before `finish_due`."""
        if self._follower is not None:
            self._follower.tick(self._sender, final=True)
        self._sender.close()


class _Sender:
    """Posts progress payloads in order, each once, on the server's webhook pool (one in flight per
    run, so order holds); failures are only logged. It owns no thread."""

    MAX_PENDING = 16  # beyond this, a stalled receiver loses the oldest payloads (progress is best effort)

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._pool = progress.pool or WebhookPool(1)
        self._lock = threading.Lock()
        self._pending: collections.deque[bytes] = collections.deque()
        self._busy = False
        self.idle = threading.Event()
        self.idle.set()

    def post(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.idle.clear()
            if len(self._pending) >= self.MAX_PENDING:
                self._pending.popleft()
                log.info("job %s: progress webhook dropped: the receiver is too slow", self._progress.job_id)
            self._pending.append(json.dumps(body).encode("utf-8"))
            if not self._busy:
                self._busy = True
                self._pool.run(self._send_next)

    def close(self) -> None:
        pass  # nothing to stop: what is queued is sent by the pool, each within its deadline

    def _send_next(self) -> None:
        with self._lock:
            body = self._pending.popleft()
        try:
            error = self._progress.send(self._progress.url, body, self._progress.timeout_s)
        except Exception as exc:  # the next payload must still go out
            error = repr(exc)
        if error:
            log.info("job %s: progress webhook not delivered: %s", self._progress.job_id, error)
        with self._lock:
            if self._pending:
                self._pool.run(self._send_next)
            else:
                self._busy = False
                self.idle.set()


class _LogFollower:
    """Sends the new stderr bytes as `logs` webhooks: at most one every LOGS_EVERY_S, one in flight."""

    def __init__(self, stderr: Path, progress: Progress) -> None:
        self._stderr = stderr
        self._progress = progress
        self._sent_to = 0
        self._last_sent = 0.0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def next_due(self) -> float:
        return self._last_sent + LOGS_EVERY_S

    def tick(self, sender: _Sender, final: bool) -> None:
        if final:  # the run is over: what is left goes after the throttle, queued behind what is in flight;
            wait = self._last_sent + LOGS_EVERY_S - time.monotonic()  # never waiting for a receiver
            if wait > 0:
                time.sleep(wait)
        elif time.monotonic() - self._last_sent < LOGS_EVERY_S or not sender.idle.is_set():
            return
        size = output_size(self._stderr)
        if size <= self._sent_to:
            return
        end = min(size, self._sent_to + MAX_LOGS_CHUNK)
        try:
            with open(self._stderr, "rb") as handle:
                handle.seek(self._sent_to)
                chunk = handle.read(end - self._sent_to)
        except OSError:
            return
        end = self._sent_to + len(chunk)
        progress = self._progress
        sender.post(
            {
                "id": progress.job_id,
                "event": "logs",
                "status": "IN_PROGRESS",
                "attempt": progress.attempt,
                "stderr_offset": self._sent_to,
                "stderr_end": end,
                "stderr": self._decoder.decode(chunk, final=final and end == size),
                "logs_url": f"/jobs/{progress.job_id}/logs?stream=stderr&offset={self._sent_to}",
            }
        )
        self._sent_to = end
        self._last_sent = time.monotonic()
