"""A node's row in `nodes`: its lease, renewed by one heartbeat per node (never one per job), and
self-fencing: a node that cannot renew stops its own jobs before its lease can be granted elsewhere.

Clocks: the database's clock alone decides when a lease has run out (`lease_until`, checked by the
sweep on any node). The node's own deadline is counted on its monotonic clock from the moment it *sent*
a renewal that then succeeded; the database set `lease_until` no earlier than that moment plus the
lease, so stopping at `sent + lease - margin` comes at least `margin` before any other node may rerun
the jobs, whatever the clocks of the machines say.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger("procq.cluster")

REGISTER = """INSERT INTO nodes (name, address, slots, resources, incarnation, started_at, heartbeat_at,
        lease_until, state)
    VALUES (%(name)s, %(address)s, %(slots)s, %(resources)s, nextval('procq_lease'), now(), now(),
        now() + make_interval(secs => %(lease)s), 'up')
    ON CONFLICT (name) DO UPDATE SET address = excluded.address, slots = excluded.slots,
        resources = excluded.resources, incarnation = excluded.incarnation, started_at = excluded.started_at,
        heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until, state = 'up'
    RETURNING incarnation"""
RENEW = """UPDATE nodes SET heartbeat_at = now(), lease_until = now() + make_interval(secs => %s)
    WHERE name = %s AND incarnation = %s AND state = 'up' RETURNING 1"""
LEAVE = "UPDATE nodes SET state = 'left', lease_until = now() WHERE name = %s AND incarnation = %s"
VIEW = """SELECT n.name, n.address, n.slots, n.resources, n.state, n.started_at, n.heartbeat_at, n.lease_until,
        (SELECT count(*) FROM jobs WHERE status = 'IN_PROGRESS' AND node = n.name)
    FROM nodes n ORDER BY n.name"""

# A node that lets its lease run out is "lost" to others even before a sweep has marked it so
PEER = """SELECT address, CASE WHEN state = 'up' AND lease_until < now() THEN 'lost' ELSE state END
    FROM nodes WHERE name = %s"""
# The secret a node names itself with when it relays a request to another (api/relay.py): made by the
# first node that starts, the same for every node after
MAKE_SECRET = "INSERT INTO settings (name, value) VALUES ('node_secret', %s) ON CONFLICT (name) DO NOTHING"
SECRET = "SELECT value FROM settings WHERE name = 'node_secret'"


class NodeLease:
    """This node's registration and lease. `connect()` makes a connection (autocommit) of its own:
    the heartbeat must never wait behind the node's other queries for a pooled one."""

    def __init__(
        self,
        connect: Callable[[], Any],
        name: str,
        address: str,
        slots: int,
        resources: Mapping[str, int] | None = None,
        lease_s: float = 6.0,
        margin_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_renewed: Callable[[float], None] = lambda deadline: None,
    ) -> None:
        self._connect = connect
        self._on_renewed = on_renewed  # told each new deadline (the keeper fences its runs by it)
        self._conn: Any = None
        self.name, self.address, self.slots = name, address, slots
        self.resources = dict(resources or {})
        self.lease_s, self.margin_s = lease_s, margin_s
        self._clock = clock
        self.incarnation: int | None = None
        self.deadline = float("-inf")  # monotonic time until which this node's lease surely holds
        self.lost = False  # the sweep declared this incarnation lost: only a new registration helps

    def register(self) -> None:
        """Join (or rejoin, as a new incarnation). Raises psycopg.Error."""
        sent = self._clock()
        params = {
            "name": self.name,
            "address": self.address,
            "slots": self.slots,
            "resources": orjson.dumps(self.resources).decode(),
            "lease": self.lease_s,
        }
        self.incarnation = self._db().execute(REGISTER, params).fetchone()[0]
        self.deadline = sent + self.lease_s - self.margin_s
        self.lost = False
        self._on_renewed(self.deadline)

    def renew(self) -> bool:
        """Extend the lease. False if the database could not be reached (the deadline stands) or this
        incarnation was declared lost meanwhile (`lost`)."""
        sent = self._clock()
        try:
            row = self._db().execute(RENEW, (self.lease_s, self.name, self.incarnation)).fetchone()
        except Exception as exc:  # psycopg.Error, or a socket error surfacing as one: drop the connection
            log.warning("node %s: could not renew its lease: %s", self.name, exc)
            self._drop()
            return False
        if row is None:
            self.lost = True
            return False
        self.deadline = sent + self.lease_s - self.margin_s
        self._on_renewed(self.deadline)
        return True

    def valid(self) -> bool:
        return not self.lost and self._clock() < self.deadline

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def leave(self) -> None:
        """A clean stop: the lease ends now, so the sweep need not wait for it."""
        try:
            self._db().execute(LEAVE, (self.name, self.incarnation))
        finally:
            self._drop()

    def drop(self) -> None:
        """Close the connection, leaving the lease to run out (--on-stop keep)."""
        self._drop()

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a connection already dead: nothing to close
                pass
            self._conn = None


class Heartbeat:
    """Renews a NodeLease every `every_s` on one thread; a second thread watches the deadline, so a
    renewal stuck on a cut network cannot delay the fencing. `on_fenced(reason)` is called once per
    lost lease (the node stops its jobs); then the beat keeps trying to register again, and
    `on_rejoined()` is called when it does."""

    def __init__(
        self,
        lease: NodeLease,
        on_fenced: Callable[[str], None],
        on_rejoined: Callable[[], None] = lambda: None,
        every_s: float = 1.0,
    ) -> None:
        self._lease = lease
        self._on_fenced, self._on_rejoined = on_fenced, on_rejoined
        self._every_s = every_s
        self._stop = threading.Event()
        self.fenced = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat, name=f"heartbeat-{lease.name}", daemon=True),
            threading.Thread(target=self._watch, name=f"fence-{lease.name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._every_s):
            if not self.fenced.is_set():
                self._lease.renew()
                continue
            try:  # fenced: our jobs are stopped; come back as a new incarnation
                self._lease.register()
            except Exception as exc:
                log.debug("node %s: still cannot rejoin: %s", self._lease.name, exc)
                self._lease._drop()
                continue
            self.fenced.clear()
            log.warning("node %s: rejoined the cluster", self._lease.name)
            self._on_rejoined()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            if not self.fenced.is_set() and not self._lease.valid():
                self.fenced.set()
                why = "it was declared lost" if self._lease.lost else "it could not renew its lease in time"
                log.error("node %s: fenced, its jobs stop: %s", self._lease.name, why)
                self._on_fenced(why)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def view(conn: Any) -> list[dict[str, Any]]:
    """GET /nodes: every node's name, address, slots, resources, state, running jobs and heartbeat."""

    def iso(moment: datetime) -> str:
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return [
        {
            "name": name,
            "address": address,
            "slots": slots,
            "resources": orjson.loads(resources),
            "state": state,
            "started_at": iso(started),
            "heartbeat_at": iso(beat),
            "lease_until": iso(until),
            "running": running,
        }
        for name, address, slots, resources, state, started, beat, until, running in conn.execute(VIEW)
    ]


def peer(conn: Any, name: str) -> dict[str, Any] | None:
    """Node `name`'s announced address and state (up, left or lost), or None if it never joined."""
    row = conn.execute(PEER, (name,)).fetchone()
    return None if row is None else {"address": row[0], "state": row[1]}


def shared_secret(conn: Any) -> str:
    """The cluster's node secret (made by the first node to ask)."""
    conn.execute(MAKE_SECRET, (secrets.token_urlsafe(32),))
    return conn.execute(SECRET).fetchone()[0]
