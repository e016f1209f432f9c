"""How a Supervisor records its job through the store: and, where it must, waits for the commit first."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from enum import Enum
from typing import TYPE_CHECKING

from procq.actors.errors import LeaseMoved
from procq.actors.job import Job
from procq.actors.mailbox import Mailbox, report
from procq.actors.store.base import Store

if TYPE_CHECKING:
    from procq.actors.supervise.supervisor import Supervisor

log = logging.getLogger("procq.supervisor")


class Recording:
    """The part of the Supervisor that talks to the store. A mixin: it works on the Supervisor's job,
    store and mailbox, on the actor's thread (commit outcomes come back as `recorded` messages)."""

    if TYPE_CHECKING:
        _job: Job
        _store: Store
        _self: Mailbox[Supervisor]
        _record_failures: int

        def _report_end(self) -> None: ...

        def _let_go(self) -> None: ...

        def _outputs(self) -> tuple[str, ...]: ...

    def _set(self, job: Job) -> None:
        """The job's new state, in memory and to the store, without waiting for the commit (nothing
        depends on it: a failure is logged by the store and the next change records it again)."""
        self._job = job
        self._store.update([job])

    def _record_then(
        self,
        job: Job,
        then: Callable[[], None],
        if_lost: Callable[[], None] | None,
        sync: tuple[str, ...] = (),
        if_moved: Callable[[], None] | None = None,
    ) -> None:
        """Record `job` as the new state and call `then` once it is durable: the one step where the
        Supervisor waits for the store before acting (start the child, report an end). If it could
        not be committed (or the job is gone from the store), `if_lost` runs instead; None: `then`.
        If the database refused it because the job's lease moved on (cluster mode: another node runs
        the job now), `if_moved` runs; None: `_let_go`.
        `sync`: files made durable before the record (the outputs an end reports)."""
        self._job = job
        commit = self._store.update([job], sync)
        commit.add_done_callback(functools.partial(_recorded, self._self, job, then, if_lost, if_moved))

    def recorded(
        self,
        job: Job,
        then: Callable[[], None],
        if_lost: Callable[[], None] | None,
        if_moved: Callable[[], None] | None,
        outcome: Outcome,
    ) -> None:
        """From the store's writer thread: the record `_record_then` asked for is committed, or failed,
        or was refused because the job's lease moved on."""
        if outcome is Outcome.RECORDED:
            self._record_failures = 0
            then()
        elif outcome is Outcome.MOVED:
            (if_moved or self._let_go)()
        else:
            (if_lost or then)()

    def _retry_later(self) -> None:
        """An end could not be recorded (a full disk): keep the job's slot and try again, waiting a
        little longer each time; the Dispatcher hears of the end only once it is durable."""
        self._record_failures += 1
        delay_s = min(5.0, 0.1 * 2**self._record_failures)
        log.error("job %s: could not record its end; trying again in %.1f s", self._job.id, delay_s)
        job = self._job
        timer = threading.Timer(delay_s, report, args=(lambda: self._self.rerecord.defer(job),))
        timer.daemon = True
        timer.start()

    def rerecord(self, job: Job) -> None:
        """From the retry timer: record the end again."""
        self._record_then(job, self._report_end, if_lost=self._retry_later, sync=self._outputs())


class Outcome(Enum):
    """What became of a record: committed, not stored (or the job is gone), or refused by its lease."""

    RECORDED = "recorded"
    LOST = "lost"
    MOVED = "moved"


def _recorded(
    supervisor: Mailbox[Supervisor],
    job: Job,
    then: Callable[[], None],
    if_lost: Callable[[], None] | None,
    if_moved: Callable[[], None] | None,
    commit: Future[int],
) -> None:
    """A commit callback (the store's writer thread): hand the outcome to the actor's own thread."""
    error = commit.exception()
    if isinstance(error, LeaseMoved):
        outcome = Outcome.MOVED
    elif error is None and commit.result() == 1:  # 0: the job is no longer in the store
        outcome = Outcome.RECORDED
    else:
        outcome = Outcome.LOST
    report(lambda: supervisor.recorded.defer(job, then, if_lost, if_moved, outcome))
