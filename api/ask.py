"""How long a request waits for an actor's answer: one bound for every resource."""

from __future__ import annotations

from typing import TypeVar

import pykka

T = TypeVar("T")

# Past it the request answers 503 "Server busy" (pykka.Timeout, mapped in api/app.py): a waitress
# thread is never held longer by an actor that is slow or stuck.
ASK_TIMEOUT_S = 10.0


def ask(future: pykka.Future[T]) -> T:
    """The actor's answer; blocks up to ASK_TIMEOUT_S, re-raises the actor's exception."""
    return future.get(timeout=ASK_TIMEOUT_S)
