"""A Supervisor-shaped actor's cost on pykka's thread per actor against the shared pool of actors/pooled.py.

    python -m bench.pooled [--actors 2000] [--messages 20000] [--jobs 1000] [--rounds 3] [--no-results]

Measures, in one run, the process's CPU time (every thread's) per actor for start + one told message +
stop, 64 at a time (as many as there are running jobs); per message for a stream of told messages
ending in an ask; per ask answered before the next is sent; a Dispatcher's CPU and context switches per
job with either kind of Supervisor (alternated); then a real server's threads idle and with 4, 16 and 64
running `sleep` jobs. Prints its lines and records them in
bench/RESULTS.md (between the pooled markers).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pykka

from bench.keeper_server import SLEEP, running
from bench.report import RESULTS, _section
from bench.server import BenchServer
from procq.actors.dispatch import launcher
from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.job import JobRequest
from procq.actors.pooled import PooledActor
from procq.actors.settings import Settings
from procq.actors.supervise.supervisor import Supervisor

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


def server_threads(steps: tuple[int, ...]) -> list[int]:
    """The server's threads idle, then with each number of running `sleep` jobs (fewest of 5 readings)."""
    work = Path(tempfile.mkdtemp(prefix="procq-pooled-"))
    server = BenchServer(work / "jobs", workers=max(steps))
    counts = []
    try:
        server.wait_ready()
        submitted = 0
        for step in (0, *steps):
            with server.client() as http:
                for _ in range(step - submitted):
                    http.submit(SLEEP)
            submitted = step
            running(server, step, 120)
            readings = []
            for _ in range(5):
                time.sleep(0.2)
                readings.append(server.ps.num_threads())
            counts.append(min(readings))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return counts


class ThreadedSupervisor(pykka.ThreadingActor, Supervisor):  # type: ignore[misc]
    """The Supervisor as it was: pykka's inbox, future and thread come first in its MRO."""


def dispatcher_per_job(threaded: bool, jobs: int, workers: int = 2) -> tuple[float, float, float]:
    """A Dispatcher in this process (a real keeper, a real store) running `jobs` `true` jobs submitted in
    batches of 100: (CPU µs, voluntary context switches, involuntary ones) of this process per job, from
    the first submit to the last end. The keeper's own cost is not counted: it is the same either way."""
    work = Path(tempfile.mkdtemp(prefix="procq-pooled-dispatch-"))
    (work / "jobs").mkdir()
    launcher.Supervisor = ThreadedSupervisor if threaded else Supervisor  # type: ignore[misc]
    try:
        dispatcher = Dispatcher.start(Settings(jobs_dir=work / "jobs", workers=workers)).proxy()
        batch = [JobRequest(args=("true",))] * 100
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(jobs // 100):
            dispatcher.accept(batch).get(timeout=60).wait(60)
        deadline = time.monotonic() + 600
        while dispatcher.stats().get(timeout=60)["counts"]["COMPLETED"] < jobs // 100 * 100:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not complete within 600 s")
            time.sleep(0.02)
        after = resource.getrusage(resource.RUSAGE_SELF)
        pykka.ActorRegistry.stop_all()
    finally:
        launcher.Supervisor = Supervisor  # type: ignore[misc]
        shutil.rmtree(work, ignore_errors=True)
    n = jobs // 100 * 100
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e6 / n
    return cpu, (after.ru_nvcsw - before.ru_nvcsw) / n, (after.ru_nivcsw - before.ru_nivcsw) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pooled", description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per in-process Dispatcher run")
    parser.add_argument("--rounds", type=int, default=3, help="Dispatcher runs of each kind, alternated")
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
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for _ in range(args.rounds):  # alternated, so the machine's load falls on both alike
        for threaded in (True, False):
            results[threaded].append(dispatcher_per_job(threaded, args.jobs))
    for label, index in (("CPU µs", 0), ("voluntary context switches", 1), ("involuntary ones", 2)):
        threaded, pooled = (statistics.median(r[index] for r in results[kind]) for kind in (True, False))
        lines.append(
            f"- Dispatcher + Supervisors in one process, {args.jobs} `true` jobs in batches of 100, 2 workers, "
            f"{label} per job (median of {args.rounds}): thread per Supervisor {threaded:.1f}, shared pool "
            f"{pooled:.1f} ({pooled / threaded:.2f} ×)"
        )
        print(lines[-1], flush=True)
    steps = (4, 16, 64)
    idle, *busy = server_threads(steps)
    shown = ", ".join(f"{count} with {step} running" for step, count in zip(steps, busy, strict=True))
    lines.append(f"- server threads: {idle} idle, {shown} `sleep` jobs")
    print(lines[-1], flush=True)
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
