"""Server-Sent Events plumbing: the wire format, a bound on open streams, and the WSGI iterable."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon

MEDIA_TYPE = "text/event-stream"
HEARTBEAT_S = 15.0  # a comment this often on an idle stream keeps proxies from timing it out


def wants_stream(req: falcon.Request) -> bool:
    """True when the client's Accept header asks for Server-Sent Events."""
    return MEDIA_TYPE in (req.accept or "")


def event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE event. `data` goes out as JSON on a single line (JSON escapes every newline)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def client_gone(req: falcon.Request) -> Callable[[], bool]:
    """A check for a client that hung up or whose API key was revoked since the stream began.
    waitress offers the first (with channel_request_lookahead >= 1, see server/main.py), so an idle
    stream frees its thread at the next poll instead of at its next write."""
    disconnected = req.env.get("waitress.client_disconnected") or (lambda: False)
    authorized = req.context.get("key_still_valid") or (lambda: True)
    return lambda: disconnected() or not authorized()


def comment(text: str) -> bytes:
    """A comment line: ignored by EventSource, it keeps proxies from timing the stream out and
    lets waitress notice a client that went away (the write fails)."""
    return f": {text}\n\n".encode()


class StreamSlots:
    """A bound on open SSE streams. Each holds a waitress thread for its whole life, so without a
    bound followers could take every thread and starve ordinary requests. A stream whose client
    has gone gives its slot back at its next poll; a newcomer who finds every slot taken does not
    wait for that: it takes back the slots of streams whose clients are already gone (their
    threads leave within a poll), so clients that open and close quickly are not refused."""

    def __init__(self, limit: int, wait_s: float = 0.25) -> None:
        self.limit = limit
        self._wait_s = wait_s  # how long a newcomer watches for a client to go before a 503
        self._lock = threading.Lock()
        self._held: dict[int, tuple[Callable[[], bool], Callable[[], None]]] = {}
        self._next = 0

    def claim(self, gone: Callable[[], bool] = lambda: False) -> Callable[[], None]:
        """A slot's release function (idempotent), or 503 when every slot is taken by a live client."""
        deadline = time.monotonic() + self._wait_s
        while True:
            with self._lock:
                if len(self._held) >= self.limit:
                    self._reclaim()
                if len(self._held) < self.limit:
                    return self._hold(gone)
            if time.monotonic() >= deadline:
                raise falcon.HTTPServiceUnavailable(
                    title="Too many streams",
                    description=f"All {self.limit} event-stream slots are in use (--max-streams); "
                    "retry shortly or poll without following.",
                    retry_after=5,
                )
            time.sleep(0.01)

    def _hold(self, gone: Callable[[], bool]) -> Callable[[], None]:
        self._next += 1
        slot = self._next

        def release() -> None:
            with self._lock:
                self._held.pop(slot, None)

        self._held[slot] = (gone, release)
        return release

    def _reclaim(self) -> None:
        """Free the slots of streams whose client is gone (their own release is then a no-op)."""
        for slot, (gone, _) in list(self._held.items()):
            try:
                dead = gone()
            except Exception:  # a check that fails tells nothing: keep the slot
                dead = False
            if dead:
                del self._held[slot]


class Stream:
    """The response body of one SSE stream: iterates `events`, and gives its slot back when the
    server closes it (end, client gone, or shutdown) even if iteration never started; a bare
    generator would skip its `finally` in that case."""

    def __init__(self, events: Iterator[bytes], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        try:
            self._events.close()  # type: ignore[attr-defined]
        finally:
            self._release()


def start(
    resp: falcon.Response,
    slots: StreamSlots,
    events: Callable[[], Iterator[bytes]],
    cleanup: Callable[[], None] | None = None,
    gone: Callable[[], bool] = lambda: False,
) -> None:
    """Make `resp` an SSE stream of `events()`, holding one of `slots` for as long as it is open
    (or until `gone()` says its client left and another client needs the slot); `cleanup` runs when
    it closes, however it closes."""
    claimed = slots.claim(gone)

    def release() -> None:
        try:
            if cleanup is not None:
                cleanup()
        finally:
            claimed()

    try:
        resp.content_type = MEDIA_TYPE
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")  # tell nginx-style proxies not to buffer it
        resp.stream = Stream(events(), release)
    except BaseException:
        release()
        raise
