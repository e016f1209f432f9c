"""GET /events: job state changes as Server-Sent Events, for dashboards and clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import falcon

from procq.actors.events import EventHub, Subscription
from procq.api import sse

WAKE_S = 0.5  # how often an idle stream checks for shutdown


class EventsResource:
    """One subscription to the EventHub per client. A client too slow to keep up is cut off (the
    Dispatcher never waits for it); EventSource then reconnects and should re-read GET /jobs."""

    def __init__(self, hub: EventHub, slots: sse.StreamSlots, heartbeat_s: float = sse.HEARTBEAT_S) -> None:
        self._hub = hub
        self._slots = slots
        self._heartbeat_s = heartbeat_s

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        subscription = self._hub.subscribe()  # now, so no change after this response began is lost
        gone = sse.client_gone(req)
        try:
            sse.start(resp, self._slots, lambda: self._stream(subscription, gone), subscription.close, gone)
        except BaseException:
            subscription.close()
            raise

    def _stream(self, subscription: Subscription, gone: Callable[[], bool]) -> Iterator[bytes]:
        yield b"retry: 2000\n\n"  # sent at once: the client knows it is subscribed
        quiet_since = time.monotonic()
        while not (self._hub.closing.is_set() or gone()):
            item = subscription.get(timeout=WAKE_S)
            if item is not None:
                kind, data = item
                yield sse.event(kind, dict(data))
                quiet_since = time.monotonic()
            elif subscription.dropped:
                yield sse.comment("too slow: events were dropped; reconnect and re-read GET /jobs")
                return
            elif time.monotonic() - quiet_since >= self._heartbeat_s:
                yield sse.comment("heartbeat")
                quiet_since = time.monotonic()
