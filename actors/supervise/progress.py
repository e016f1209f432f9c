"""Progress webhooks of one run: `start` when it starts, `logs` with the new stderr bytes as they come."""

from __future__ import annotations

import codecs
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procq.actors.supervise.sampler import output_size

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

    def finished(self) -> None:
        """The run is over: send the rest of its log, then let the sender thread end. Blocks briefly."""
        if self._follower is not None:
            self._follower.tick(self._sender, final=True)
        self._sender.close()


class _Sender:
    """One thread posting progress payloads in order, each once; failures are only logged."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self.idle = threading.Event()
        self.idle.set()
        threading.Thread(target=self._run, daemon=True, name=f"progress-{progress.job_id}").start()

    def post(self, body: dict[str, Any]) -> None:
        self.idle.clear()
        self._queue.put(json.dumps(body).encode("utf-8"))

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            error = self._progress.send(self._progress.url, body, self._progress.timeout_s)
            if error:
                log.info("job %s: progress webhook not delivered: %s", self._progress.job_id, error)
            if self._queue.empty():
                self.idle.set()


class _LogFollower:
    """Sends the new stderr bytes as `logs` webhooks: at most one every LOGS_EVERY_S, one in flight."""

    def __init__(self, stderr: Path, progress: Progress) -> None:
        self._stderr = stderr
        self._progress = progress
        self._sent_to = 0
        self._last_sent = 0.0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def tick(self, sender: _Sender, final: bool) -> None:
        if final:  # the run is over: send what is left once the throttle and the sender allow it
            wait = self._last_sent + LOGS_EVERY_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sender.idle.wait(self._progress.timeout_s)
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
