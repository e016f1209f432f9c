"""Actors that share a small, bounded pool of threads instead of holding a thread each.

A `PooledActor` is a pykka actor in every way its senders can see (refs, proxies, `tell`, `ask`,
`defer`, ThreadingFuture replies, ActorRegistry), but it owns no thread: sending it a message puts
the actor on its pool's ready queue unless it is there already or running, and a pool thread then
handles a batch of its messages, one at a time, in order, the way pykka's own loop does. One actor is
never on two threads at once (its inbox's `_scheduled` flag says it is queued or running), and after a
batch it goes to the back of the queue, so a busy actor cannot starve the others. This is how Akka's
and Orleans's dispatchers run many actors on few threads.

The rule that makes a bounded pool safe: a handler never waits on another actor (STYLE.md already
asks it of every actor), and anything slow goes to a helper thread or another pool. A handler that
blocks only holds up the actors queued behind it; it cannot deadlock the pool unless it waits for
something only a pooled actor could provide.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import pykka
from pykka import ActorDeadError, ActorRegistry, messages

if TYPE_CHECKING:
    from pykka._envelope import Envelope

log = logging.getLogger("procq.pooled")

BATCH = 16  # messages one actor handles per turn before the next ready actor gets the thread


class ActorPool:
    """`size` daemon threads, started together on first use, that run turns of pooled actors. A turn
    goes straight to an idle thread (the one idle last: it is the likeliest still in the CPU's caches),
    or waits in a FIFO backlog that busy threads take from. Thread-safe; holds no actor state."""

    def __init__(self, size: int, name: str = "actors") -> None:
        if size < 1:
            raise ValueError(f"an actor pool needs at least one thread, not {size}")
        self.size = size
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._backlog: collections.deque[Callable[[], None]] = collections.deque()
        self._started = False

    def schedule(self, turn: Callable[[], None]) -> None:
        """Queue one actor's turn; a pool thread runs it when free. Returns at once."""
        if not self._started:
            self._start()
        with self._lock:
            if not self._idle:
                self._backlog.append(turn)
                return
            worker = self._idle.pop()
            worker.turn = turn
        worker.wake.release()

    def threads(self) -> int:
        """How many threads the pool has: none before its first turn, then `size`."""
        return self.size if self._started else 0

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            # All at once, and kept. Daemon: an actor still on the pool cannot keep the process
            # alive; the server stops its actors (ActorRegistry.stop_all) before it exits, which
            # waits for their turns.
            for number in range(1, self.size + 1):
                worker = _Worker()
                self._idle.append(worker)
                threading.Thread(target=self._work, args=(worker,), daemon=True, name=f"{self._name}-{number}").start()
            self._started = True

    def _work(self, worker: _Worker) -> None:
        while True:
            worker.wake.acquire()  # released by `schedule`, with a turn handed over
            turn = worker.turn
            while turn is not None:
                try:
                    turn()
                except BaseException:  # a turn handles its own failures; this thread must survive anything
                    log.exception("a pooled actor's turn failed")
                with self._lock:
                    if self._backlog:
                        turn = self._backlog.popleft()
                    else:
                        turn = worker.turn = None
                        self._idle.append(worker)


class _Worker:
    """One pool thread's hand-over slot: `schedule` sets `turn`, then releases `wake`."""

    __slots__ = ("wake", "turn")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held until there is a turn for this thread
        self.turn: Callable[[], None] | None = None


# The default pool (PooledActor.pool), for every Supervisor. Four: their handlers are short, and the
# only waits, the keeper's spawn and stop round trips, queue on its one control connection anyway, so more
# threads would only wait on its lock; a few keep other Supervisors' ends and records moving meanwhile.
SHARED = ActorPool(4, "supervisors")


class PooledActor(pykka.Actor):
    """A pykka actor run on `pool` (a class attribute: set it on a subclass to give it other threads).
    Same semantics as pykka.ThreadingActor: `on_start` before any message; a reply to each ask, or its
    exception; a told message's exception stops the actor and calls `on_failure`; `_ActorStop` stops
    it, `on_stop` runs, and asks still queued then (or sent later) fail with ActorDeadError."""

    pool: ClassVar[ActorPool] = SHARED

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.open(self.pool, self._first_turn, self._turn)

    def _first_turn(self) -> bool:
        """on_start, as pykka's loop runs it: a failure there stops the actor without on_failure."""
        try:
            self.on_start()
        except Exception:
            self._handle_failure(*sys.exc_info())
        return not self.actor_stopped.is_set()

    def _turn(self, envelope: Envelope[Any]) -> bool:
        """Handle one message exactly as pykka's `_actor_loop_running` does; False once stopped."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log.info("Exception returned from %s to caller:", self, exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            log.debug("%r in %s. Stopping all actors.", sys.exc_info()[1], self)
            self._stop()
            # Not on this pool thread: stop_all waits for every actor, some of which need this pool.
            threading.Thread(target=ActorRegistry.stop_all, daemon=True, name="stop-all").start()
        return not self.actor_stopped.is_set()


class _Inbox:
    """A pooled actor's messages, and whether its turn is queued or running (never two at once)."""

    def __init__(self) -> None:
        self._messages: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = True  # until `open`: messages sent before the start wait for the first turn
        self._dead = False
        self._pool: ActorPool | None = None
        self._first: Callable[[], bool] | None = None
        self._handle: Callable[[Envelope[Any]], bool] | None = None

    def open(self, pool: ActorPool, first: Callable[[], bool], handle: Callable[[Envelope[Any]], bool]) -> None:
        """Start the actor: its first turn runs `first` (on_start), then whatever was sent meanwhile."""
        self._pool, self._first, self._handle = pool, first, handle
        pool.schedule(self._run)

    # --- pykka's ActorInbox protocol ----------------------------------------------------------------

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            dead = self._dead
            if not dead:
                self._messages.append(envelope)
                if self._scheduled:
                    return
                self._scheduled = True
        if dead:  # stopped between the sender's is_alive check and now: answer as teardown would
            _refuse(envelope)
            return
        assert self._pool is not None
        self._pool.schedule(self._run)

    def get(self) -> Envelope[Any]:
        with self._lock:
            return self._messages.popleft()

    def empty(self) -> bool:
        with self._lock:
            return not self._messages

    # --- a turn, on a pool thread -------------------------------------------------------------------

    def _run(self) -> None:
        assert self._handle is not None
        alive = True
        if self._first is not None:
            first, self._first = self._first, None
            alive = first()
        handled = 0
        while alive:
            with self._lock:
                if not self._messages:
                    self._scheduled = False  # the next put schedules a new turn
                    return
                if handled == BATCH:  # fair: back of the ready queue, still scheduled
                    break
                envelope = self._messages.popleft()
            alive = self._handle(envelope)
            handled += 1
        if alive:
            assert self._pool is not None
            self._pool.schedule(self._run)
            return
        self._teardown()

    def _teardown(self) -> None:
        with self._lock:
            self._dead = True
            left, self._messages = list(self._messages), collections.deque()
        for envelope in left:
            _refuse(envelope)


def _refuse(envelope: Envelope[Any]) -> None:
    """Answer a message the stopped actor will not handle, as pykka's `_actor_loop_teardown` does."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        error = ActorDeadError(f"{envelope.message!r} reached a stopped actor")
        envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))
