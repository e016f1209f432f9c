"""Measuring one run: its process tree's memory and CPU, and the size of its output files. It only measures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

_CTIME_TOLERANCE_S = 0.01

GpuMemory = Callable[[], "dict[int, int] | None"]  # pid -> bytes on every GPU (resources.detect.gpu_memory_by_pid)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of a running job: its tree now, and its CPU so far (exited members included)."""

    rss_bytes: int
    cpu_user_s: float
    cpu_system_s: float
    output_bytes: int  # stdout.txt + stderr.txt
    gpu_memory_bytes: int | None = None  # on NVIDIA GPUs, where the management library is installed


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
        return Sample(rss, user, system, sum(output_size(path) for path in outputs), gpu)


def output_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
