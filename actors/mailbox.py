"""Fire-and-forget messages to an actor, `mailbox.method.defer(*args)`, without building a pykka proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pykka
from pykka.messages import ProxyCall

A = TypeVar("A", bound=pykka.Actor)


class Mailbox(Generic[A]):
    """Sends exactly what `proxy.method.defer(...)` sends (a ProxyCall), minus the proxy: pykka
    introspects every attribute of the actor to build one (~0.4 ms), and a job needs two (the
    Dispatcher's handle on its Supervisor, and the Supervisor's for its helper threads).
    Raises ActorDeadError like a proxy once the actor has stopped. Holds no data: safe to share."""

    __slots__ = ("_ref",)

    def __init__(self, ref: pykka.ActorRef[A]) -> None:
        self._ref = ref

    def __getattr__(self, method: str) -> _Message:
        return _Message(self._ref, method)


class _Message:
    __slots__ = ("_ref", "_method")

    def __init__(self, ref: pykka.ActorRef[pykka.Actor], method: str) -> None:
        self._ref = ref
        self._method = method

    def defer(self, *args: Any, **kwargs: Any) -> None:
        self._ref.tell(ProxyCall(attr_path=(self._method,), args=args, kwargs=kwargs))


def report(send: Callable[[], Any]) -> None:
    """Send a helper thread's or timer's report to an actor that may have stopped meanwhile; then
    nobody is waiting for it, and it is dropped."""
    try:
        send()
    except pykka.ActorDeadError:
        pass
