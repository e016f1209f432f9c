"""Job state changes broadcast to listeners outside the actors: SSE subscribers and log followers."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from procq.actors.job import Job

EVENT_FIELDS = ("id", "status", "enqueued_at", "started_at", "completed_at")


class Watcher(Protocol):
    """Told by the Dispatcher, on its own thread, of every change to a job: must return at once."""

    def job_changed(self, before: Job | None, after: Job) -> None: ...

    def job_removed(self, job: Job) -> None: ...


class Subscription:
    """One listener's bounded inbox of events. `get` blocks up to a timeout (on a waitress thread)."""

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self._hub = hub
        self._inbox: queue.Queue[tuple[str, Mapping[str, Any]]] = queue.Queue(maxsize)
        self.dropped = False  # set when the listener fell `maxsize` events behind and was cut off

    def get(self, timeout: float) -> tuple[str, Mapping[str, Any]] | None:
        """The next (kind, data) event, or None after `timeout` seconds without one."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._hub._unsubscribe(self)

    def _offer(self, event: tuple[str, Mapping[str, Any]]) -> bool:
        try:
            self._inbox.put_nowait(event)
        except queue.Full:
            self.dropped = True
            return False
        return True


class EventHub:
    """Thread-safe fan-out of job changes. The Dispatcher publishes (a Watcher) without ever blocking:
    each subscriber has a bounded queue, and one that falls behind is dropped, not waited for.

    It also hands out a `threading.Event` per followed job, set when that job reaches a terminal
    state, so many log followers learn of the end without asking the Dispatcher on every poll.
    Events are read-only mappings: every subscriber gets the same object.
    """

    def __init__(self, queue_size: int = 1000, local: bool = True) -> None:
        self._queue_size = queue_size
        # False in cluster mode: subscribers get every node's changes from the cluster's event feed
        # (`publish`), so this node's own changes must not reach them twice; followers' ends stay local.
        self._local = local
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        # Followers hold the events; once none does, the entry disappears by itself.
        self._ends: weakref.WeakValueDictionary[str, threading.Event] = weakref.WeakValueDictionary()
        self.closing = threading.Event()  # set at shutdown: streams end so waitress can stop

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._queue_size)
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    def end_of(self, job_id: str) -> threading.Event:
        """An event set once job `job_id` is terminal. Ask for it before reading the job's state,
        so an end published in between is not missed."""
        with self._lock:
            event = self._ends.get(job_id)
            if event is None:
                event = self._ends[job_id] = threading.Event()
            return event

    def close(self) -> None:
        self.closing.set()

    def job_changed(self, before: Job | None, after: Job) -> None:
        if before is not None and before.status is after.status:
            return  # a webhook delivery update, not a state change
        if self._local:
            data = {name: getattr(after, name) for name in EVENT_FIELDS} | {"status": after.status.value}
            self._publish(("job", MappingProxyType(data)))
        if after.status.terminal:
            with self._lock:
                event = self._ends.pop(after.id, None)
            if event is not None:
                event.set()

    def job_removed(self, job: Job) -> None:
        if self._local:
            self._publish(("deleted", MappingProxyType({"id": job.id})))

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """An event from elsewhere (the cluster's event feed, on its own thread): `job` or `deleted`."""
        self._publish((kind, MappingProxyType(dict(data))))

    def _publish(self, event: tuple[str, Mapping[str, Any]]) -> None:
        with self._lock:
            late = [s for s in self._subscribers if not s._offer(event)]
            self._subscribers.difference_update(late)

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
