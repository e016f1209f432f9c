"""A Supervisor-shaped actor's cost on pykka's thread per actor against the shared pool of actors/pooled.py.

    python -m bench.pooled [--actors 2000] [--messages 20000] [--no-results]

Measures, in one run, the process's CPU time (every thread's) per actor for start + one told message +
stop, 64 at a time (as many as there are running jobs); per message for a stream of told messages
ending in an ask; per ask answered before the next is sent. Prints its lines and records them in
bench/RESULTS.md (between the pooled markers).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pykka

from bench.report import RESULTS, _section
from procq.actors.pooled import PooledActor

BEGIN, END = "<!-- pooled:begin -->", "<!-- pooled:end -->"
IN_FLIGHT = 64


class _Job:
    """What a Supervisor does with its messages, minus the job: note it, and stop when told to."""

    def __init__(self, done: threading.Event | None = None) -> None:
        super().__init__()
        self.count = 0
        self._done = done

    def note(self) -> None:
        self.count += 1

    def finish(self) -> None:
        if self._done is not None:
            self._done.set()
        self.stop()  # type: ignore[attr-defined]

    def total(self) -> int:
        return self.count


class Threaded(_Job, pykka.ThreadingActor):
    pass


class Pooled(_Job, PooledActor):
    pass


def lifecycle_cpu_us(kind: type[Any], actors: int) -> float:
    """CPU µs per actor: start, one message, stop itself; IN_FLIGHT alive at a time."""
    began = time.process_time()
    for _ in range(actors // IN_FLIGHT):
        events = [threading.Event() for _ in range(IN_FLIGHT)]
        refs = [kind.start(event) for event in events]
        for ref in refs:
            ref.tell(pykka.messages.ProxyCall(attr_path=("note",), args=(), kwargs={}))
            ref.tell(pykka.messages.ProxyCall(attr_path=("finish",), args=(), kwargs={}))
        for event in events:
            event.wait(30)
    used = time.process_time() - began
    return used * 1e6 / (actors // IN_FLIGHT * IN_FLIGHT)


def message_cpu_us(kind: type[Any], messages: int) -> float:
    """CPU µs per told message to one actor, the last one an ask."""
    ref = kind.start()
    note = pykka.messages.ProxyCall(attr_path=("note",), args=(), kwargs={})
    began = time.process_time()
    for _ in range(messages):
        ref.tell(note)
    assert ref.ask(pykka.messages.ProxyCall(attr_path=("total",), args=(), kwargs={}), timeout=60) == messages
    used = time.process_time() - began
    ref.stop()
    return used * 1e6 / messages


def ask_cpu_us(kind: type[Any], asks: int) -> float:
    """CPU µs per ask answered before the next is sent (a round trip: each wakes the actor's thread)."""
    ref = kind.start()
    total = pykka.messages.ProxyCall(attr_path=("total",), args=(), kwargs={})
    began = time.process_time()
    for _ in range(asks):
        ref.ask(total, timeout=60)
    used = time.process_time() - began
    ref.stop()
    return used * 1e6 / asks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pooled", description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    lines = []
    threaded, pooled = lifecycle_cpu_us(Threaded, args.actors), lifecycle_cpu_us(Pooled, args.actors)
    lines.append(
        f"- actor start + one message + stop, {IN_FLIGHT} at a time, {args.actors} actors: thread per actor "
        f"{threaded:.0f} µs CPU, shared pool {pooled:.0f} µs ({pooled / threaded:.2f} ×)"
    )
    print(lines[-1], flush=True)
    threaded, pooled = message_cpu_us(Threaded, args.messages), message_cpu_us(Pooled, args.messages)
    lines.append(
        f"- told message to one actor, {args.messages} in a stream: thread per actor {threaded:.1f} µs CPU, "
        f"shared pool {pooled:.1f} µs ({pooled / threaded:.2f} ×)"
    )
    print(lines[-1], flush=True)
    asks = args.messages // 4
    threaded, pooled = ask_cpu_us(Threaded, asks), ask_cpu_us(Pooled, asks)
    lines.append(
        f"- ask round trip to one actor, {asks} one after another: thread per actor {threaded:.1f} µs CPU, "
        f"shared pool {pooled:.1f} µs ({pooled / threaded:.2f} ×)"
    )
    print(lines[-1], flush=True)
    pykka.ActorRegistry.stop_all()
    if not args.no_results:
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python -m bench.pooled " + " ".join(argv if argv is not None else sys.argv[1:])
        block = f"{BEGIN}\n## Supervisors on a shared pool: the actor's own cost\n\n- Date: {date}\n"
        block += f"- Command: `{command.strip()}`\n\n" + "\n".join(lines) + f"\n{END}"
        text = RESULTS.read_text(encoding="utf-8")
        old = _section(text, BEGIN, END)
        RESULTS.write_text(text.replace(old, block) if old else text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
