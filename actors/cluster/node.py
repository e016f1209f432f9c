"""This node in the cluster: its lease and heartbeat, the claim of runnable jobs, hints, the lease
sweep and the cancels other nodes ask of it. A plain object made at start (server/main.py) and driven
by the ClusterDispatcher; its one loop thread only ever *tells* the Dispatcher (never waits on it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import psycopg

from procq.actors.cluster import cancels, claim, feed, hints, nodes, owed, sweep
from procq.actors.store import pgschema
from procq.actors.store.postgres import PostgresStore, connect

if TYPE_CHECKING:
    from procq.actors.keeper.link import KeeperLink

log = logging.getLogger("procq.cluster")


def fence_grace(grace_s: float, lease_s: float) -> float:
    """How long a fenced run gets between SIGTERM and SIGKILL: --grace, but at most half the fencing
    margin (`min(2 s, lease / 3)`), so its tree is gone before the lease may be granted elsewhere."""
    return min(grace_s, min(2.0, lease_s / 3) / 2)


class ClusterNode:
    """`start(dispatcher)` begins the loop: every hint (or `poll_s` at the latest) it tells the
    Dispatcher to claim, answers this node's cancel requests, and once a second sweeps lost nodes."""

    def __init__(
        self,
        store: PostgresStore,
        name: str,
        address: str,
        slots: int,
        resources: Mapping[str, int] | None = None,
        lease_s: float = 6.0,
        poll_s: float = 0.5,
        keeper: KeeperLink | None = None,
        grace_s: float = 3.0,
    ) -> None:
        self.store, self.name = store, name
        url = store.url
        self._connect = lambda role: lambda: connect(url, f"procq {name} {role}")
        self.fence_grace_s = fence_grace(grace_s, lease_s)

        def renewed(deadline: float) -> None:  # the keeper ends its runs at the same deadline as the server
            if keeper is not None:
                keeper.fence(deadline, self.fence_grace_s)

        self.lease = nodes.NodeLease(
            self._connect("heartbeat"),
            name,
            address,
            slots,
            resources,
            lease_s,
            margin_s=min(2.0, lease_s / 3),
            on_renewed=renewed,
        )
        self._poll_s = poll_s
        self._heartbeat: nodes.Heartbeat | None = None
        self._listener: hints.Listener | None = None
        self._notifier: hints.Notifier | None = None
        self._feed: feed.EventFeed | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cancelling: set[str] = set()  # cancel requests being acted on (loop thread only)
        self._lock = threading.Lock()  # guards _cancelling and _runs
        self._runs: dict[str, Callable[[], None]] = {}  # job id -> how to interrupt its run
        self.secret = ""  # the cluster's node secret, read at join

    def join(self) -> None:
        """Register (before recovery: the sweep must not take this node's runs meanwhile), hold the
        leases of the runs the database says this node has, and keep the lease renewed. Raises psycopg.Error."""
        self.lease.register()
        with self.store.connection() as conn:
            self.secret = nodes.shared_secret(conn)
            self.store.hold(dict(conn.execute(pgschema.LEASES_OF, (self.name,)).fetchall()))

    def start(self, on_fenced: Callable[[str], None], tell: Any) -> None:
        """`tell`: the Dispatcher's proxy; the loop calls `tell.pump.defer()`, `tell.cancel_here.defer(id)`
        and `tell.deliver_owed.defer(jobs)`."""
        self._tell = tell

        def fence(why: str) -> None:  # on the heartbeat's watch thread: straight to the Supervisors
            with self._lock:
                interrupts = list(self._runs.values())
            for interrupt in interrupts:
                interrupt()
            on_fenced(why)

        self._heartbeat = nodes.Heartbeat(self.lease, fence, on_rejoined=lambda: tell.pump.defer())
        self._listener = hints.Listener(self._connect("listener"), poll_s=self._poll_s)
        self._notifier = hints.Notifier(self._connect("notifier"))
        self._thread = threading.Thread(target=self._loop, name=f"cluster-{self.name}", daemon=True)
        self._thread.start()

    def feed_events(self, publish: feed.Publish) -> None:
        """Publish every node's job state changes to `publish` (the EventHub), from a thread of its own."""
        self._feed = feed.EventFeed(self._connect("events"), publish, listen_to=self._connect("events listener"))

    def running(self, job_id: str, interrupt: Callable[[], None]) -> None:
        """A run this node started: `interrupt` ends it if the node is fenced (from any thread)."""
        with self._lock:
            self._runs[job_id] = interrupt

    def done(self, job_id: str) -> None:
        with self._lock:
            self._runs.pop(job_id, None)

    def fenced(self) -> bool:
        return self._heartbeat is not None and self._heartbeat.fenced.is_set()

    def claim(self, slots: int, free: Mapping[str, int]) -> list[claim.Claimed]:
        """Claim up to `slots` runnable jobs for this node (none while it is fenced). Never raises:
        a database that cannot be reached means nothing is claimed until the next poll."""
        if slots <= 0 or self.fenced() or not self.lease.valid():
            return []
        with self._lock:
            busy = list(self._runs)  # a job claimed again before its last run here was handled: run twice
        try:
            with self.store.connection() as conn:
                claimed = claim.claim(conn, self.name, slots, free, busy)
        except Exception as exc:
            log.warning("node %s: could not claim jobs: %s", self.name, exc)
            return []
        self.store.hold({c.job.id: c.lease for c in claimed})
        return claimed

    def poke(self) -> None:
        """Hint every node that jobs may be runnable (batched: at most one NOTIFY per short gap)."""
        if self._notifier is not None:
            self._notifier.poke()

    def request_cancel(self, job_id: str, wait_s: float) -> threading.Event | None:
        """Ask the node running `job_id` to cancel it. Returns an event set once that node says the
        tree is gone (or `wait_s` passed), or None if the job is not running anywhere."""
        with self.store.connection() as conn:
            owner = cancels.request(conn, job_id)
        if owner is None:
            return None
        done = threading.Event()

        def wait() -> None:
            try:
                with self.store.connection() as conn:
                    cancels.wait_answered(conn, job_id, wait_s)
            finally:
                done.set()

        threading.Thread(target=wait, name=f"cancel-wait-{job_id}", daemon=True).start()
        return done

    def answer_when(self, job_id: str, ended: threading.Event) -> None:
        """Answer a cancel request once this node's run of the job has ended (its outcome recorded)."""

        def answer() -> None:
            ended.wait()
            try:
                with self.store.connection() as conn:
                    cancels.answer(conn, job_id)
            except Exception as exc:
                log.warning("node %s: could not answer the cancel of %s: %s", self.name, job_id, exc)
            with self._lock:
                self._cancelling.discard(job_id)

        threading.Thread(target=answer, name=f"cancel-answer-{job_id}", daemon=True).start()

    def nodes(self) -> list[dict[str, Any]]:
        with self.store.connection() as conn:
            return nodes.view(conn)

    def peer(self, name: str) -> dict[str, Any] | None:
        with self.store.connection() as conn:
            return nodes.peer(conn, name)

    def _loop(self) -> None:
        assert self._listener is not None
        swept_at = 0.0
        clock = threading.Event()
        while not self._stop.is_set():
            self._tell.pump.defer()
            try:
                with self.store.connection() as conn:
                    self._take_cancels(conn)
                    now = time.monotonic()
                    if now - swept_at >= 1.0:
                        swept_at = now
                        if sweep.sweep(conn):
                            self.poke()
                        self._adopt_owed(conn)
            except Exception as exc:  # the database is away: the heartbeat decides about fencing
                log.debug("node %s: cluster loop: %s", self.name, exc)
                clock.wait(0.2)
            self._listener.wait()

    def _adopt_owed(self, conn: psycopg.Connection) -> None:
        """Deliver the webhooks gone nodes owed (never while this node's own lease is in doubt)."""
        if self.fenced() or not self.lease.valid():
            return
        adopted = owed.adopt(conn, self.name)
        if adopted:
            log.warning("node %s: delivers %d webhook(s) that gone nodes owed", self.name, len(adopted))
            self._tell.deliver_owed.defer(adopted)

    def _take_cancels(self, conn: psycopg.Connection) -> None:
        for job_id, lease in cancels.pending(conn, self.name):
            with self._lock:
                if job_id in self._cancelling:
                    continue
                self._cancelling.add(job_id)
            if self.store.lease_of(job_id) == lease:
                self._tell.cancel_here.defer(job_id)
            else:  # the run it named is over here: nothing of it is left to end
                done = threading.Event()
                done.set()
                self.answer_when(job_id, done)

    def close(self, keep_running: bool = False) -> None:
        """A clean stop: the loop ends, and the lease with it (the sweep need not wait for it). With
        `keep_running` (--on-stop keep) the lease is renewed a last time instead and left to run: the
        keeper keeps the runs until then, and a server restarted before it re-adopts them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for part in (self._heartbeat, self._listener, self._notifier, self._feed):
            if part is not None:
                part.stop()
        try:
            if keep_running and not self.fenced():
                if self.lease.renew():
                    log.info("node %s: its runs are kept until %.1f s from now", self.name, self.lease.remaining())
                self.lease.drop()
            else:
                self.lease.leave()
        except Exception as exc:
            log.warning("node %s: could not leave the cluster cleanly: %s", self.name, exc)
