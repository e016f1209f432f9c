"""What the Dispatcher hands back for changes that become durable later, and how store commits reach it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from procq.actors.job import Job
from procq.actors.mailbox import report
from procq.actors.store.base import Commit

log = logging.getLogger("procq.dispatcher")
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def carry_on(handler: _Handler) -> _Handler:
    """For messages nobody waits on (defer): an exception escaping one would stop the actor for
    good, and every request after it would answer 503. Log it and take the next message."""

    @functools.wraps(handler)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handler(self, *args, **kwargs)
        except Exception:
            log.exception("dispatcher: %s failed; carrying on", handler.__name__)
            return None

    return guarded  # type: ignore[return-value]


@dataclass(frozen=True)
class Accepted:
    """What a submit made: the jobs (in the order asked), whether they are new (False: an
    Idempotency-Key replay of earlier ones), and the commit the caller waits on before answering."""

    jobs: tuple[Job, ...]
    created: bool
    commit: Commit | None = None

    def wait(self, timeout_s: float) -> tuple[Job, ...]:
        """Block until the jobs are durable; raises StorageError if they could not be stored."""
        if self.commit is not None:
            self.commit.result(timeout_s)
        return self.jobs


def if_failed(send: Callable[..., Any], value: Any, commit: Future[Any]) -> None:
    """A commit callback (writer thread): tell the Dispatcher only if the change was not stored."""
    if commit.exception() is not None:
        report(lambda: send.defer(value))


def when_done(send: Callable[..., Any], first: Any, second: Any, commit: Future[Any]) -> None:
    """A commit callback (writer thread): tell the Dispatcher the outcome, None for success."""
    report(lambda: send.defer(first, second, commit.exception()))
