"""Every OS-specific call procq makes: spawn flags, ending process trees, signals, atomic files, locks.

Nothing else in procq mentions os.name, signals, process groups or file locking (a test fences it).
Pure helpers take `windows` as a parameter so Linux tests can run the Windows branch.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
from procq.actors import backoff

WINDOWS = os.name == "nt"
log = logging.getLogger("procq.osdeps")
T = TypeVar("T")

# Defined here so the module imports on POSIX, where subprocess lacks them.
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)
_TRANSIENT_WINERRORS = (5, 32)  # access denied, sharing violation: someone holds the file open
_CTIME_TOLERANCE_S = 0.01  # create_time is a float; rounding differs between psutil calls


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


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied as exc:
        log.warning("access denied while ending a job's process: %s", exc)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def install_shutdown(on_stop: Callable[[], None]) -> None:
    """Route SIGINT, SIGTERM (and SIGBREAK on Windows) to one graceful stop. Main thread only.

    The first signal calls `on_stop` and raises KeyboardInterrupt, which ends waitress's loop;
    later signals are only logged, so a second Ctrl+C does not cut the shutdown short.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_shutdown must be called from the main thread")
    stopping = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stopping.is_set():
            log.warning("signal %d received while already stopping", signum)
            return
        stopping.set()
        on_stop()
        raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handle)


def request_stop() -> None:
    """Ask the main thread to stop, as Ctrl+C would (for service wrappers)."""
    _thread.interrupt_main()


def is_transient(exc: OSError, windows: bool = WINDOWS) -> bool:
    """True for errors that pass when another handle on the file closes (Windows only)."""
    return windows and getattr(exc, "winerror", None) in _TRANSIENT_WINERRORS


def retry_transient(
    action: Callable[[], T],
    windows: bool = WINDOWS,
    sleep: Callable[[float], None] = time.sleep,
    budget_s: float = 2.0,
    first_s: float = 0.001,
    max_s: float = 0.1,
) -> T:
    """Run `action`, retrying while Windows reports a file as in use (another handle on it closes soon);
    gives up after `budget_s` seconds of waiting. Any other error is raised at once."""
    transient = lambda exc: isinstance(exc, OSError) and is_transient(exc, windows)  # noqa: E731
    return backoff.retry(action, transient, budget_s, first_s, max_s, sleep)


def replace_file(
    tmp: Path,
    dst: Path,
    windows: bool = WINDOWS,
    sleep: Callable[[float], None] = time.sleep,
    budget: float = 2.0,
) -> None:
    """os.replace, retried for up to `budget` seconds while Windows reports the target as in use."""
    retry_transient(lambda: os.replace(tmp, dst), windows, sleep, budget)


def read_bytes(path: str | Path, windows: bool = WINDOWS, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """Read a whole file with one short-lived handle, retrying briefly while Windows swaps it."""
    return retry_transient(lambda: _read(path), windows, sleep, budget_s=0.12)


def _read(path: str | Path) -> bytes:
    # os.open/os.read: half the cost of open().read() for the small files read by the 100,000 at start.
    # O_BINARY: without it, Windows would translate line endings.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(path: Path, windows: bool = WINDOWS) -> None:
    """Make a rename or a new entry in `path` durable. Directories cannot be opened on Windows."""
    if windows:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_exclusively(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on `path` for as long as the returned file stays open.

    Raises OSError if another process holds it: waitress sets SO_REUSEADDR, so on Windows a second
    server could bind the same port silently; the jobs directory lock is what keeps it out.
    """
    handle = open(path, "a+b")  # noqa: SIM115 - the open handle is the lock
    try:
        if WINDOWS:
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise
    return handle


_FILE_ATTRIBUTE_REPARSE_POINT = 0x400  # Windows: symlinks and junctions both carry it


def is_plain_dir(path: Path) -> bool:
    """True for a real directory at `path` itself: not a symlink, and on Windows not a junction
    (os.lstat reports some junctions as directories). Raises OSError but FileNotFoundError -> False."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    reparse = getattr(info, "st_file_attributes", 0) & _FILE_ATTRIBUTE_REPARSE_POINT
    return stat.S_ISDIR(info.st_mode) and not reparse


def open_inside(path: Path, root: Path) -> IO[bytes]:
    """Open `path` for reading only if it really lies inside `root`: no symlink on the way may lead
    out (realpath check), and the last component is opened with O_NOFOLLOW where the OS has it, so a
    link swapped in after the check is refused too. Raises PermissionError for a path that leaves root."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root or os.path.islink(path):
        raise PermissionError(13, "refusing a path that leads outside the jobs directory", str(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0))
    return open(fd, "rb")


def create_private(path: Path) -> IO[bytes]:
    """A new file (it must not exist) readable only by the server's user, opened for binary writing.
    The mode is ignored on Windows, where the directory's ACL decides; O_BINARY stops CRLF translation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return open(fd, "wb")
