"""The server's watch over every running job, in two threads whatever the number of jobs.

- The timer thread holds one heap of deadlines (timeout_seconds) and tells a Supervisor when its run
  has gone past its own.
- The sampler thread walks every run that has a memory or output limit, or progress webhooks, once
  per interval: it measures the run's tree and output files and tells its Supervisor (which decides
  about limits), and drives the progress webhooks of the runs that asked for them, up to the last part
  of a run that is over (sent once its throttle allows).
Supervisors register a run when it starts (or is re-adopted) and forget it when it ends. Everything
reaches a Supervisor as a deferred message; nothing here decides what a job becomes.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from procq.actors.mailbox import Mailbox, report
from procq.actors.supervise.progress import Progress, Reporter
from procq.actors.supervise.sampler import GpuMemory, ProcessTree

if TYPE_CHECKING:
    from procq.actors.supervise.supervisor import Supervisor

log = logging.getLogger("procq.monitor")


@dataclass(eq=False)
class _Watched:
    """One run being sampled. Touched only by the sampler thread once registered."""

    pid: int
    created: float
    outputs: tuple[Path, Path]
    supervisor: Mailbox[Supervisor]
    sample: bool
    reporter: Reporter | None
    gpu_memory: GpuMemory | None = None
    tree: ProcessTree | None = None
    due: float = field(default_factory=time.monotonic)


class Monitor:
    """Timeouts and sampling for every running job of a server. Thread-safe."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._deadlines: list[tuple[float, int, str]] = []  # (monotonic deadline, seq, run)
        self._timeouts: dict[str, tuple[Mailbox[Supervisor], str]] = {}
        self._watched: dict[str, _Watched] = {}
        self._finishing: list[Reporter] = []  # runs over whose last progress part the sampler still sends
        self._seq = itertools.count()
        self._closed = False
        threading.Thread(target=self._time_forever, daemon=True, name="timeouts").start()
        threading.Thread(target=self._sample_forever, daemon=True, name="sampler").start()

    def watch(
        self,
        run: str,
        supervisor: Mailbox[Supervisor],
        pid: int,
        created: float,
        outputs: tuple[Path, Path],
        sample: bool,
        progress: Progress | None,
        timeout_in_s: float | None,
        timeout_error: str = "",
        gpu_memory: GpuMemory | None = None,
    ) -> None:
        """Watch one run: its deadline `timeout_in_s` from now (if any), its samples (if `sample`),
        its progress webhooks (if `progress`)."""
        reporter = Reporter(progress, outputs[1]) if progress is not None else None
        if reporter is not None:
            reporter.started()
        with self._lock:
            if timeout_in_s is not None:
                self._timeouts[run] = (supervisor, timeout_error)
                heapq.heappush(self._deadlines, (time.monotonic() + timeout_in_s, next(self._seq), run))
                self._wake.notify_all()
            if sample or reporter is not None:
                due = time.monotonic() + self._interval_s  # the first sample one interval in: most jobs end sooner
                self._watched[run] = _Watched(pid, created, outputs, supervisor, sample, reporter, gpu_memory, due=due)

    def forget(self, run: str) -> None:
        """The run is over: no timeout, no more samples; its progress webhooks send their last part."""
        with self._lock:
            self._timeouts.pop(run, None)  # its heap entry goes stale
            watched = self._watched.pop(run, None)
            if watched is not None and watched.reporter is not None:
                # The last part waits out the throttle: on the sampler thread, not on a thread per run.
                self._finishing.append(watched.reporter)
                self._wake.notify_all()  # the sampler may be waiting a whole interval

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"timeouts": len(self._timeouts), "sampled": len(self._watched)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    # --- the two threads ------------------------------------------------------------------------

    def _time_forever(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    while self._deadlines and self._deadlines[0][2] not in self._timeouts:
                        heapq.heappop(self._deadlines)  # the run ended before its deadline
                    if self._deadlines and self._deadlines[0][0] <= time.monotonic():
                        break
                    wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else None
                    self._wake.wait(wait)
                if self._closed:
                    return
                _, _, run = heapq.heappop(self._deadlines)
                supervisor, error = self._timeouts.pop(run)
            report(functools.partial(supervisor.limit_reached.defer, error))

    def _sample_forever(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    ending, self._finishing = self._finishing, []
                    break
                now = time.monotonic()
                due = [(run, w) for run, w in self._watched.items() if w.due <= now]
                ending = [reporter for reporter in self._finishing if reporter.finish_due() <= now]
                self._finishing = [reporter for reporter in self._finishing if reporter.finish_due() > now]
            self._finish(ending)
            for run, watched in due:
                watched.due = now + self._interval_s
                try:
                    self._sample(watched)
                except pykka.ActorDeadError:
                    self.forget(run)
                except Exception:  # one run's sample must not stop the walk for every other
                    log.exception("run %s: sampling failed", run)
            with self._lock:
                if not self._closed:
                    busy = self._watched or self._finishing
                    self._wake.wait(min(self._interval_s, 0.1) if busy else self._interval_s)
        self._finish(ending)  # closed: what is left goes now (each waits out its throttle)

    @staticmethod
    def _finish(reporters: list[Reporter]) -> None:
        for reporter in reporters:
            try:
                reporter.finished()
            except Exception:  # one run's last part must not stop the others'
                log.exception("a progress webhook's last part failed")

    @staticmethod
    def _sample(watched: _Watched) -> Any:
        if watched.sample:
            watched.tree = watched.tree or ProcessTree(watched.pid, watched.created, watched.gpu_memory)
            watched.supervisor.sampled.defer(watched.tree.measure(watched.outputs))
        if watched.reporter is not None:
            watched.reporter.tick()
