"""PooledActor: pykka's actor semantics on a small shared pool of threads (real threads, no stand-ins)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pykka
import pytest

from procq.actors.pooled import BATCH, ActorPool, PooledActor

WAIT_S = 10


class Recorder(PooledActor):
    """Records what it handles; checks that no two of its messages ever overlap."""

    pool: ClassVar[ActorPool] = ActorPool(2, "test-recorders")

    def __init__(self, failures: list[BaseException] | None = None, stopped: threading.Event | None = None) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.inside = 0
        self.overlaps = 0
        self.started_first: bool | None = None
        self.threads: set[str] = set()
        self._failures = failures if failures is not None else []
        self._stopped = stopped or threading.Event()

    def on_start(self) -> None:
        self.started_first = not self.seen
        self.threads.add(threading.current_thread().name)

    def on_stop(self) -> None:
        self._stopped.set()

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        assert exc is not None
        self._failures.append(exc)

    def record(self, item: Any) -> None:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.threads.add(threading.current_thread().name)
        self.seen.append(item)
        self.inside -= 1

    def wait_for(self, event: threading.Event) -> None:
        assert event.wait(WAIT_S)

    def state(self) -> tuple[list[Any], int, bool | None, frozenset[str]]:
        return list(self.seen), self.overlaps, self.started_first, frozenset(self.threads)

    def fail(self, message: str) -> None:
        raise ValueError(message)


def test_messages_from_many_senders_are_handled_one_at_a_time_in_each_senders_order() -> None:
    ref = Recorder.start()
    proxy = ref.proxy()

    def send(sender: int) -> None:
        for seq in range(300):
            proxy.record.defer((sender, seq))

    senders = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(WAIT_S)
    seen, overlaps, started_first, _ = proxy.state().get(timeout=WAIT_S)
    assert len(seen) == 8 * 300 and overlaps == 0 and started_first is True
    for sender in range(8):
        assert [seq for s, seq in seen if s == sender] == list(range(300))


def test_many_actors_share_the_pools_few_threads() -> None:
    class Small(Recorder):
        pool: ClassVar[ActorPool] = ActorPool(3, "test-shared")

    pool = Small.pool
    proxies = [Small.start().proxy() for _ in range(60)]
    for n, proxy in enumerate(proxies):
        for seq in range(20):
            proxy.record.defer((n, seq))
    threads: set[str] = set()
    for n, proxy in enumerate(proxies):
        seen, overlaps, _, used = proxy.state().get(timeout=WAIT_S)
        assert seen == [(n, seq) for seq in range(20)] and overlaps == 0
        threads |= used
    assert pool.threads() <= 3
    assert len(threads) <= 3 and all(name.startswith("test-shared-") for name in threads)


def test_an_ask_gets_the_reply_or_the_exception_and_the_actor_lives_on() -> None:
    failures: list[BaseException] = []
    ref = Recorder.start(failures)
    proxy = ref.proxy()
    proxy.record("a").get(timeout=WAIT_S)
    with pytest.raises(ValueError, match="asked"):
        proxy.fail("asked").get(timeout=WAIT_S)
    assert ref.is_alive() and failures == []
    assert proxy.state().get(timeout=WAIT_S)[0] == ["a"]
    assert proxy.seen.get(timeout=WAIT_S) == ["a"]  # attribute reads through the proxy work too


def test_a_told_message_that_raises_stops_the_actor_after_on_failure() -> None:
    failures: list[BaseException] = []
    ref = Recorder.start(failures)
    proxy = ref.proxy()
    proxy.fail.defer("told")
    assert ref.actor_stopped.wait(WAIT_S)
    assert [str(exc) for exc in failures] == ["told"]
    with pytest.raises(pykka.ActorDeadError):
        proxy.record.defer("late")


def test_a_stop_answers_the_asks_before_it_and_fails_the_ones_after_it() -> None:
    stopped = threading.Event()
    ref = Recorder.start(stopped=stopped)
    proxy = ref.proxy()
    release = threading.Event()
    proxy.wait_for.defer(release)  # holds the actor while the rest queues up behind it
    before = proxy.record("before")
    stop = ref.stop(block=False)
    after = proxy.record("after")
    release.set()
    assert before.get(timeout=WAIT_S) is None
    assert stop.get(timeout=WAIT_S) is True
    with pytest.raises(pykka.ActorDeadError):
        after.get(timeout=WAIT_S)
    assert stopped.is_set() and not ref.is_alive()
    assert ref.stop(block=True, timeout=WAIT_S) is False  # stopping again is harmless


def test_a_busy_actor_yields_its_thread_so_others_are_not_starved() -> None:
    order: list[str] = []  # only the pool's one thread appends to it

    class Logged(Recorder):
        pool: ClassVar[ActorPool] = ActorPool(1, "test-fair")

        def __init__(self, name: str) -> None:
            super().__init__()
            self._name = name

        def record(self, item: Any) -> None:
            order.append(self._name)
            super().record(item)

    busy, other = Logged.start("busy").proxy(), Logged.start("other").proxy()
    release = threading.Event()
    busy.wait_for.defer(release)  # the one thread is held by `busy` while its backlog and `other` queue
    for seq in range(10 * BATCH):
        busy.record.defer(seq)
    answered = other.record("other")
    release.set()
    answered.get(timeout=WAIT_S)
    assert busy.state().get(timeout=WAIT_S)[0] == list(range(10 * BATCH))
    # `other` ran after at most one batch of `busy`, not after its whole backlog
    assert order.index("other") < BATCH and len(order) == 10 * BATCH + 1
    assert Logged.pool.threads() == 1


def test_an_actor_whose_on_start_fails_is_stopped_and_fails_the_asks_sent_meanwhile() -> None:
    release = threading.Event()

    class Broken(Recorder):
        def on_start(self) -> None:
            assert release.wait(WAIT_S)
            raise RuntimeError("on_start bug")

    ref = Broken.start()
    pending = ref.proxy().record("never")  # queued behind on_start
    release.set()
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=WAIT_S)
    assert not ref.is_alive()


def test_stop_all_stops_pooled_actors_and_waits_for_their_on_stop() -> None:
    events = [threading.Event() for _ in range(20)]
    refs = [Recorder.start(stopped=event) for event in events]
    pykka.ActorRegistry.stop_all(block=True, timeout=WAIT_S)
    assert all(event.is_set() for event in events) and not any(ref.is_alive() for ref in refs)
