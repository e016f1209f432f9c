"""Spawn flags, process identity (pid + create time) and ending whole process trees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

from procq.actors.osdeps.common import _CTIME_TOLERANCE_S, WINDOWS, _quietly, log

# Defined here so the module imports on POSIX, where subprocess lacks them.
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)


CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)


def spawn_kwargs(windows: bool = WINDOWS) -> dict[str, Any]:
    """Extra Popen kwargs: the child gets its own process group so it can be ended as a whole,
    and the server's Ctrl+C / Ctrl+Break does not reach it."""
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def command_refusal(args: list[str], windows: bool = WINDOWS) -> str | None:
    """Why `args` may not be run on this OS, or None. On Windows cmd.exe re-parses the arguments
    of .bat/.cmd files even without a shell, which allows injection."""
    name = args[0].rstrip(". ").lower()
    if windows and name.endswith((".bat", ".cmd")):
        return f"{args[0]!r} is a batch file; batch files are not run on Windows (cmd.exe re-parses their arguments)"
    return None


def identity(pid: int) -> tuple[int, float]:
    """(pid, create_time) of a process: recorded in meta.json to recognise it after a restart.
    A process already gone gets create_time 0.0, which no live process matches."""
    try:
        return pid, psutil.Process(pid).create_time()
    except psutil.Error:
        return pid, 0.0


def same_process(pid: int, ctime: float) -> bool:
    """Is the process that started at `ctime` with this pid still alive (not a reused pid, not a zombie)?"""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - ctime) <= _CTIME_TOLERANCE_S and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_tree(pid: int, ctime: float, grace: float, windows: bool = WINDOWS) -> list[int]:
    """End the process `pid` (if it is still the one started at `ctime`) and every process it started.

    Blocks up to `grace` + a few seconds: terminate first (POSIX), kill what is left. Returns the pids
    of survivors (normally empty). A pid reused by another process is left alone.
    """
    try:
        root = psutil.Process(pid)
        if abs(root.create_time() - ctime) > _CTIME_TOLERANCE_S:
            return []
        # Snapshot before anything dies: Windows does not reparent orphans, so they could not be found later.
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    if not windows and grace > 0:
        _signal_group(pid, signal.SIGTERM)
        for proc in procs[1:]:  # members that left the group still get the polite request
            _quietly(proc.terminate)
        procs = _wait_gone(procs, grace)
    procs = _freeze(procs)
    for proc in reversed(procs):  # children before parents, so nobody respawns them
        _quietly(proc.kill)
    survivors = _wait_gone(procs, 5.0)
    if not windows:
        _signal_group(pid, signal.SIGKILL)  # members whose parent died before the snapshot
    for proc in survivors:
        log.warning("process %d survived the kill of job tree %d", proc.pid, pid)
    return [proc.pid for proc in survivors]


def wait_child(child: subprocess.Popen[bytes], windows: bool = WINDOWS) -> tuple[int, tuple[float, float, int] | None]:
    """Block until `child` exits and reap it. Returns its exit code (as Popen reports it) and what
    the OS says it used: (user CPU s, system CPU s, peak resident bytes), covering the child and the
    descendants it waited for; None where that cannot be read. Sampling alone misses short runs."""
    if windows:
        code = child.wait()
        try:  # an exited process stays readable while Popen holds its handle
            proc = psutil.Process(child.pid)
            times, memory = proc.cpu_times(), proc.memory_info()
            return code, (times.user, times.system, int(getattr(memory, "peak_wset", 0)))
        except psutil.Error:
            return code, None
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except ChildProcessError:  # reaped elsewhere: Popen kept the code
        return child.wait(), None
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen knows it is gone
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return child.returncode, (usage.ru_utime, usage.ru_stime, usage.ru_maxrss * scale)


def _freeze(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Suspend every process and add children born meanwhile (3 rounds), so the tree stops growing."""
    known = {p.pid for p in procs}
    for _ in range(3):
        born = []
        for proc in procs:
            _quietly(proc.suspend)
            try:
                born += [c for c in proc.children(recursive=True) if c.pid not in known]
            except psutil.Error:
                pass
        if not born:
            break
        known.update(c.pid for c in born)
        procs = procs + born
    return procs


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Poll until every process is gone or a zombie. Not psutil.wait_procs: it would reap our own
    child and steal the exit code from the Supervisor's waiter thread."""
    deadline = time.monotonic() + timeout
    alive = procs
    while True:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.005)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty
