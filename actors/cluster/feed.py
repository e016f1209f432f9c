"""Every node's job state changes for this node's GET /events: one thread reads the `job_events` log
(written by a trigger on `jobs`, actors/store/pgschema.py) and publishes each change once, in order per job.

Why transaction ids and not just `seq > cursor`: a sequence value is taken before its transaction
commits, so event 7 can become visible after event 8 was read, and a plain cursor would skip it.
Instead, every read is one REPEATABLE READ snapshot that also gives `pg_snapshot_xmin`: every
transaction below it has ended, so no event with a smaller `xid` can still appear. The reader asks
for the events with `xid >= cursor` (the last xmin), publishes the ones it has not published yet
(remembered by seq until the xmin passes them), in seq order, and moves its cursor to the new xmin.
Each event is published once and the moment its transaction's commit is visible, and since one job's
events are written under its row lock, seq order is commit order for any one job.

Polling is the floor (`poll_s`); a hint on the jobs channel (new or requeued jobs, batched by the
Notifier) wakes it early. A long transaction anywhere only holds the xmin back: the remembered set
grows a little, nothing is delayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from procq.actors.cluster import hints

log = logging.getLogger("procq.cluster")

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
SINCE = "SELECT seq, xid::text::bigint, kind, data::text FROM job_events WHERE xid >= %s::text::xid8 ORDER BY seq"
PRUNE = "DELETE FROM job_events WHERE at < now() - make_interval(secs => %s)"

Publish = Callable[[str, Mapping[str, Any]], None]


class Cursor:
    """Where a reader stands: the xmin of its last read and the events at or above it it has seen."""

    def __init__(self) -> None:
        self.xmin: int | None = None  # None: not read yet (the first read publishes nothing: history)
        self.seen: set[int] = set()

    def read(self, conn: Any) -> list[tuple[str, dict[str, Any]]]:
        """The events committed since the last read, oldest first, on `conn` (autocommit)."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            horizon = conn.execute(HORIZON).fetchone()[0]
            rows = conn.execute(SINCE, (str(horizon if self.xmin is None else self.xmin),)).fetchall()
        first, self.xmin = self.xmin is None, max(horizon, self.xmin or 0)
        fresh = [] if first else [(kind, orjson.loads(data)) for seq, _, kind, data in rows if seq not in self.seen]
        self.seen = {seq for seq, xid, _, _ in rows if xid >= self.xmin}
        return fresh


class EventFeed:
    """The reading thread: publishes to `publish(kind, data)` (the EventHub) and, every `keep_s`,
    deletes events older than `keep_s` (any node may: a reader is never that far behind)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        publish: Publish,
        listen_to: Callable[[], Any] | None = None,
        poll_s: float = 0.25,
        keep_s: float = 600.0,
    ) -> None:
        self._connect = connect
        self._publish = publish
        self._keep_s = keep_s
        # a connection of its own for LISTEN (None: poll only, as behind PgBouncer in transaction mode)
        listen = listen_to is not None
        self._listener = hints.Listener(listen_to or connect, channels=(hints.JOBS,), poll_s=poll_s, listen=listen)
        self._stop = threading.Event()
        self.published = 0
        self.ready = threading.Event()  # set after the first read: changes from then on are published
        self._thread = threading.Thread(target=self._run, name="pg-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cursor, conn, pruned_at = Cursor(), None, time.monotonic()
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect()
                for kind, data in cursor.read(conn):
                    self._publish(kind, data)
                    self.published += 1
                self.ready.set()
                if time.monotonic() - pruned_at >= self._keep_s:
                    pruned_at = time.monotonic()
                    conn.execute(PRUNE, (self._keep_s,))
            except Exception as exc:  # the database is away: read again from the same cursor later
                log.warning("event feed: %s; reading again shortly", exc)
                conn = None
                self._stop.wait(0.5)
            self._listener.wait()
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.stop()
        self._thread.join(timeout=5)
