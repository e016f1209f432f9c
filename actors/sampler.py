"""The watch thread of one run: samples its process tree and output sizes, and sends progress webhooks.

It only measures and reports; the Supervisor decides (limits) from the samples it is sent.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pykka

log = logging.getLogger("procq.sampler")

GpuMemory = Callable[[], "dict[int, int] | None"]  # pid -> bytes on every GPU (resources.detect.gpu_memory_by_pid)

LOGS_EVERY_S = 0.5  # at most one `logs` progress webhook per job per this many seconds
MAX_LOGS_CHUNK = 64 * 1024  # bytes of stderr one `logs` webhook carries; the next one continues
_CTIME_TOLERANCE_S = 0.01


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of a running job: its tree now, and its CPU so far (exited members included)."""

    rss_bytes: int
    cpu_user_s: float
    cpu_system_s: float
    output_bytes: int  # stdout.txt + stderr.txt
    gpu_memory_bytes: int | None = None  # on NVIDIA GPUs, where the management library is installed


@dataclass(frozen=True, slots=True)
class Progress:
    """Where and what a run reports as progress webhooks (`start`, `logs`); each is one attempt."""

    job_id: str
    attempt: int
    url: str
    events: tuple[str, ...]
    send: Callable[[str, bytes, float], str | None]
    timeout_s: float


def watch(
    pid: int,
    created: float,
    outputs: tuple[Path, Path],
    interval_s: float,
    stopped: threading.Event,
    supervisor: Any,  # SupervisorProxy
    progress: Progress | None,
    gpu_memory: GpuMemory | None = None,
) -> None:
    """The body of the watch thread: sample every `interval_s` until `stopped` is set, telling the
    Supervisor each sample; send progress webhooks alongside. Blocks; it is the thread's whole life."""
    sender = _Sender(progress) if progress is not None else None
    if sender is not None and "start" in progress.events:
        sender.post({"id": progress.job_id, "event": "start", "status": "IN_PROGRESS", "attempt": progress.attempt})
    follower = _LogFollower(outputs[1], progress) if progress is not None and "logs" in progress.events else None
    tree: ProcessTree | None = None
    # The first sample comes one interval in: walking the process table costs milliseconds, and most
    # jobs of a busy server end sooner (their usage is read when they are reaped).
    while not stopped.wait(interval_s):
        tree = tree or ProcessTree(pid, created, gpu_memory)
        sample = tree.measure(outputs)
        try:
            supervisor.sampled.defer(sample)
        except pykka.ActorDeadError:
            break
        if follower is not None and sender is not None:
            follower.tick(sender, final=False)
    if follower is not None and sender is not None:
        follower.tick(sender, final=True)
    if sender is not None:
        sender.close()


def truncate_outputs(stdout: Path, stderr: Path, limit: int) -> None:
    """Cut the output files to `limit` bytes together: stdout keeps up to all of it, stderr the rest."""
    kept = 0
    for path in (stdout, stderr):
        try:
            size = path.stat().st_size
            if size > limit - kept:
                os.truncate(path, limit - kept)
            kept += min(size, limit - kept)
        except OSError as exc:
            log.error("could not truncate %s to the output limit: %s", path, exc)


class ProcessTree:
    """The job's process tree as seen so far. Members stay counted after they exit (their last
    CPU reading) or leave the tree (orphans re-parented elsewhere), so CPU totals never shrink."""

    def __init__(self, pid: int, created: float, gpu_memory: GpuMemory | None = None) -> None:
        self._gpu_memory = gpu_memory
        self._procs: dict[int, psutil.Process] = {}
        self._cpu: dict[int, tuple[float, float]] = {}
        try:
            root = psutil.Process(pid)
            if abs(root.create_time() - created) <= _CTIME_TOLERANCE_S:
                self._root: psutil.Process | None = root
                self._procs[pid] = root
            else:
                self._root = None
        except psutil.Error:
            self._root = None

    def measure(self, outputs: tuple[Path, Path]) -> Sample:
        if self._root is not None:
            try:
                for child in self._root.children(recursive=True):
                    self._procs.setdefault(child.pid, child)
            except psutil.Error:
                pass
        rss = 0
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                self._cpu[pid] = (times.user, times.system)
            except psutil.Error:
                del self._procs[pid]  # gone: its last reading stays in _cpu
        user = sum(u for u, _ in self._cpu.values())
        system = sum(s for _, s in self._cpu.values())
        gpu = None
        if self._gpu_memory is not None:
            used = self._gpu_memory()
            gpu = None if used is None else sum(used.get(pid, 0) for pid in self._procs)
        return Sample(rss, user, system, sum(_size(path) for path in outputs), gpu)


class _Sender:
    """One thread posting progress payloads in order, each once; failures are only logged."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self.idle = threading.Event()
        self.idle.set()
        threading.Thread(target=self._run, daemon=True, name=f"progress-{progress.job_id}").start()

    def post(self, body: dict[str, Any]) -> None:
        self.idle.clear()
        self._queue.put(json.dumps(body).encode("utf-8"))

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            error = self._progress.send(self._progress.url, body, self._progress.timeout_s)
            if error:
                log.info("job %s: progress webhook not delivered: %s", self._progress.job_id, error)
            if self._queue.empty():
                self.idle.set()


class _LogFollower:
    """Sends the new stderr bytes as `logs` webhooks: at most one every LOGS_EVERY_S, one in flight."""

    def __init__(self, stderr: Path, progress: Progress) -> None:
        self._stderr = stderr
        self._progress = progress
        self._sent_to = 0
        self._last_sent = 0.0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def tick(self, sender: _Sender, final: bool) -> None:
        if final:  # the run is over: send what is left once the throttle and the sender allow it
            wait = self._last_sent + LOGS_EVERY_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sender.idle.wait(self._progress.timeout_s)
        elif time.monotonic() - self._last_sent < LOGS_EVERY_S or not sender.idle.is_set():
            return
        size = _size(self._stderr)
        if size <= self._sent_to:
            return
        end = min(size, self._sent_to + MAX_LOGS_CHUNK)
        try:
            with open(self._stderr, "rb") as handle:
                handle.seek(self._sent_to)
                chunk = handle.read(end - self._sent_to)
        except OSError:
            return
        end = self._sent_to + len(chunk)
        progress = self._progress
        sender.post(
            {
                "id": progress.job_id,
                "event": "logs",
                "status": "IN_PROGRESS",
                "attempt": progress.attempt,
                "stderr_offset": self._sent_to,
                "stderr_end": end,
                "stderr": self._decoder.decode(chunk, final=final and end == size),
                "logs_url": f"/jobs/{progress.job_id}/logs?stream=stderr&offset={self._sent_to}",
            }
        )
        self._sent_to = end
        self._last_sent = time.monotonic()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
