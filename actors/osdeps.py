"""Every OS-specific call procq makes: spawn flags, ending process trees, signals, atomic files, locks.

Nothing else in procq mentions os.name, signals, process groups or file locking (a test fences it).
Pure helpers take `windows` as a parameter so Linux tests can run the Windows branch.
"""

from __future__ import annotations

import _thread
import ctypes
import errno
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
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


@dataclass(frozen=True, slots=True)
class RunAs:
    """The user jobs run as (--run-as): who they are, and what their environment says about it."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self) -> dict[str, str]:
        """HOME, USER and LOGNAME of that user (the server's own would point programs at root's files)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def lookup_run_as(name: str, windows: bool = WINDOWS, euid: int | None = None) -> RunAs:
    """The user `name` jobs may be run as. Raises ValueError with one sentence saying why not: on
    Windows (run the service as that user instead), when this process is not root (it could not
    switch), or when there is no such user."""
    if windows:
        raise ValueError("--run-as works on POSIX only; on Windows run the procq service as that user instead")
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise ValueError(
            f"--run-as needs the server started as root to switch users (it runs as uid {euid}); "
            f"start it as root, or start it as {name!r} without --run-as"
        )
    import pwd  # POSIX only

    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise ValueError(f"--run-as: there is no user {name!r} on this system") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid)) - {entry.pw_gid}))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/")


def run_as_kwargs(run_as: RunAs | None) -> dict[str, Any]:
    """Popen kwargs that start the child as `run_as` (its uid, primary group and only its own groups:
    the server's supplementary groups are dropped). Nothing when run_as is None."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}


def give_to(paths: list[Path], run_as: RunAs | None) -> None:
    """Make `run_as` own each path (never through a symlink), so a job may write its directory and
    files; the jobs directory and meta.json stay the server's. Nothing when run_as is None."""
    if run_as is None:
        return
    for path in paths:
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)


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


class NotARegularFile(PermissionError):
    """A file procq serves is a symlink, a FIFO, a device or a directory, or lies outside its root."""


def open_inside(path: Path, root: Path) -> IO[bytes]:
    """Open `path` for reading only if it is a regular file really inside `root`: no symlink on the way
    may lead out (realpath check), the last component is opened with O_NOFOLLOW where the OS has it
    (a link swapped in after the check is refused too), and O_NONBLOCK so a FIFO planted there cannot
    hang the read. Raises NotARegularFile for anything else; FileNotFoundError when it is missing."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root or os.path.islink(path):
        raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path))
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a link swapped in, a socket, a directory
            raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path)) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path))
    return open(fd, "rb")


def create_private(path: Path) -> IO[bytes]:
    """A new file (it must not exist) readable only by the server's user, opened for binary writing.
    The mode is ignored on Windows, where the directory's ACL decides; O_BINARY stops CRLF translation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return open(fd, "wb")


# --- the keeper: its channel, starting it detached, spawning, reaping and ending whole runs ----------

RUN_MARKER = "PROCQ_RUN"  # every job process carries PROCQ_RUN=<job id>.<attempt> in its environment
CREATE_SUSPENDED = getattr(subprocess, "CREATE_SUSPENDED", 0x4)
DETACHED_PROCESS = getattr(subprocess, "DETACHED_PROCESS", 0x8)
CREATE_BREAKAWAY_FROM_JOB = getattr(subprocess, "CREATE_BREAKAWAY_FROM_JOB", 0x01000000)
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path holds 104 (macOS) or 108 (Linux) bytes with its NUL


@dataclass(frozen=True, slots=True)
class Reaped:
    """A child the keeper reaped: how it ended, and what the OS says it used (None where unknown).
    `exit_code` follows Popen: the code, or minus the signal that ended it."""

    pid: int
    exit_code: int
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    peak_rss_bytes: int | None = None

    @property
    def signal(self) -> int | None:
        return -self.exit_code if self.exit_code < 0 else None


def channel(jobs_dir: Path, name: str, windows: bool = WINDOWS) -> tuple[str, str]:
    """(address, family) of the keeper's channel for `jobs_dir`: a named pipe on Windows, a Unix socket
    in the jobs directory on POSIX (in a private temporary directory when that path is too long)."""
    digest = hashlib.sha256(os.path.normcase(str(jobs_dir)).encode("utf-8")).hexdigest()[:20]
    if windows:
        return rf"\\.\pipe\procq-{name}-{digest}", "AF_PIPE"
    path = str(jobs_dir / f".{name}.sock")
    if len(path.encode("utf-8")) <= _SUN_PATH_MAX:
        return path, "AF_UNIX"
    private = Path(tempfile.gettempdir()) / f"procq-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    if private.stat().st_uid != os.getuid() or private.stat().st_mode & 0o077:
        raise PermissionError(13, "not a private directory of this user", str(private))
    return str(private / f"{name}-{digest}.sock"), "AF_UNIX"


def detached_kwargs(windows: bool = WINDOWS, breakaway: bool = True) -> dict[str, Any]:
    """Popen kwargs for the keeper: its own session (POSIX) or a detached process that leaves the
    server's job object where allowed (Windows), so it outlives the server and its console."""
    if windows:
        flags = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | (CREATE_BREAKAWAY_FROM_JOB if breakaway else 0)
        return {"creationflags": flags}
    return {"start_new_session": True}


def start_detached(args: list[str], cwd: Path, env: dict[str, str], log_file: IO[bytes]) -> int:
    """Start `args` detached (see detached_kwargs) and return its pid. A Windows job object that
    forbids breakaway refuses the flag; the keeper then starts inside it (a service must allow it)."""
    common = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": log_file, "cwd": cwd, "env": env}
    try:
        return subprocess.Popen(args, **common, **detached_kwargs()).pid
    except PermissionError:
        if not WINDOWS:
            raise
        return subprocess.Popen(args, **common, **detached_kwargs(breakaway=False)).pid


def become_subreaper(linux: bool = sys.platform.startswith("linux")) -> bool:
    """Make orphaned descendants of this process (a job's setsid/double-fork escapees) its children
    instead of init's, so they stay findable and are reaped here. Linux only; False elsewhere."""
    if not linux:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def run_spawn_kwargs(windows: bool = WINDOWS) -> dict[str, Any]:
    """Popen kwargs for a job the keeper starts: like spawn_kwargs, and suspended on Windows until it
    is inside its job object, so it cannot start a process that escapes it."""
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | CREATE_SUSPENDED}
    return spawn_kwargs(windows)


def spawn_run(
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    stdout: IO[bytes],
    stderr: IO[bytes],
    run_as: RunAs | None = None,
) -> tuple[subprocess.Popen[bytes], Any]:
    """Start a job process (no shell, stdin from the null device), as `run_as` if given, and return it
    with its Windows job object (kill-on-close: the tree ends even if the keeper dies), or None on POSIX."""
    child = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        **run_spawn_kwargs(),
        **run_as_kwargs(run_as),
    )
    if not WINDOWS:
        return child, None
    try:
        job = _job_object(child)
    except Exception:
        child.kill()
        raise
    psutil.Process(child.pid).resume()
    return child, job


def _job_object(child: subprocess.Popen[bytes]) -> Any:
    import win32job  # pywin32: a Windows-only dependency

    job = win32job.CreateJobObject(None, "")
    info = win32job.QueryInformationJobObject(job, win32job.JobObjectExtendedLimitInformation)
    info["BasicLimitInformation"]["LimitFlags"] |= win32job.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    win32job.SetInformationJobObject(job, win32job.JobObjectExtendedLimitInformation, info)
    win32job.AssignProcessToJobObject(job, int(child._handle))  # type: ignore[attr-defined]
    return job


def reap_any() -> Reaped:
    """POSIX: block until any child of this process exits and reap it, with its usage (it covers the
    descendants it waited for). Raises ChildProcessError when there is no child."""
    pid, status, usage = os.wait4(-1, 0)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    code = os.waitstatus_to_exitcode(status)
    return Reaped(pid, code, usage.ru_utime, usage.ru_stime, usage.ru_maxrss * scale)


def reap_handles(children: dict[int, subprocess.Popen[bytes]], wake: Any, timeout: float | None) -> list[Reaped]:
    """Windows: wait on every child's process handle and `wake` (a Connection) at once; reap those
    that exited. multiprocessing's wait() waits on any number of handles, 63 at a time."""
    by_handle = {int(child._handle): pid for pid, child in children.items()}  # type: ignore[attr-defined]
    ready = mp_connection.wait([wake, *by_handle], timeout)
    reaped = []
    for item in ready:
        if item is wake:
            while wake.poll():
                wake.recv_bytes()
            continue
        pid = by_handle[item]
        child = children[pid]
        usage: tuple[float | None, float | None, int | None] = (None, None, None)
        try:  # an exited process stays readable while Popen holds its handle
            proc = psutil.Process(pid)
            times, memory = proc.cpu_times(), proc.memory_info()
            usage = (times.user, times.system, int(getattr(memory, "peak_wset", 0)) or None)
        except psutil.Error:
            pass
        reaped.append(Reaped(pid, child.wait(), *usage))
    return reaped


def inherited_rss(linux: bool = sys.platform.startswith("linux")) -> int:
    """Bytes of a child's ru_maxrss that may be this process's image, not the child's: the kernel
    counts the spawner's memory at exec. Only values above it are the job's own. 0 on Windows, where
    a process's peak working set is its own. On Linux it is this process's own high-water mark
    (VmHWM): its ru_maxrss also carries whatever the process that exec'd it once used."""
    if WINDOWS:
        return 0
    if linux:
        try:
            with open("/proc/self/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def group_alive(pgid: int, job: Any = None, windows: bool = WINDOWS) -> bool:
    """True if the run led by `pgid` still has processes: its process group (signal 0 tests, sends
    nothing; asked right after the leader was reaped, while members left behind keep the id from
    being reused), or on Windows its job object."""
    if windows:
        if job is None:
            return False
        import win32job  # pywin32: a Windows-only dependency

        info = win32job.QueryInformationJobObject(job, win32job.JobObjectBasicAccountingInformation)
        return info["ActiveProcesses"] > 0
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def adopted(known: set[int], linux: bool = sys.platform.startswith("linux")) -> list[int]:
    """Children of this process that it did not start itself (`known`): orphans handed to the
    subreaper. Linux reads the kernel's per-thread child lists (cheap); elsewhere there are none."""
    if not linux:
        return []
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as handle:
                found += [int(pid) for pid in handle.read().split()]
        except OSError:
            pass  # the thread ended meanwhile
    return [pid for pid in found if pid not in known]


def run_of(pid: int) -> str | None:
    """The PROCQ_RUN marker in a process's environment, or None (gone, not ours, or no marker)."""
    try:
        return psutil.Process(pid).environ().get(RUN_MARKER)
    except (psutil.Error, OSError):
        return None


def marked(marker: str, born_after: float) -> list[psutil.Process]:
    """Every process of ours carrying `marker` that started after `born_after`: the second net for
    members of a run that left its tree (setsid, double fork), where no subreaper keeps them."""
    found = []
    for proc in psutil.process_iter(["create_time"]):
        if (proc.info["create_time"] or 0) + _CTIME_TOLERANCE_S < born_after:
            continue
        try:
            if proc.environ().get(RUN_MARKER) == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def stop_run(pid: int, ctime: float, marker: str, grace: float, job: Any = None, windows: bool = WINDOWS) -> list[int]:
    """End every process of one run: the root (if still the one started at `ctime`), its tree, and
    every process carrying its marker with their trees. On Windows its job object ends them all.
    Terminate first, then kill what is left after `grace` seconds. Returns the survivors' pids."""
    if windows and job is not None:
        import win32job  # pywin32: a Windows-only dependency

        _quietly(lambda: win32job.TerminateJobObject(job, 1))
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        if abs(root.create_time() - ctime) <= _CTIME_TOLERANCE_S:
            procs[pid] = root
    except psutil.NoSuchProcess:
        pass
    for proc in [*procs.values(), *marked(marker, ctime)]:
        procs[proc.pid] = proc
        try:
            procs.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:
            pass
    group = not windows and pid in procs  # the leader's identity is confirmed: the group id is its
    alive = list(procs.values())
    if not windows and grace > 0 and alive:
        if group:
            _signal_group(pid, signal.SIGTERM)
        for proc in alive:
            _quietly(proc.terminate)
        alive = _wait_gone(alive, grace)
    alive = _freeze(alive)
    for proc in reversed(alive):
        _quietly(proc.kill)
    survivors = _wait_gone(alive, 5.0)
    if group:
        _signal_group(pid, signal.SIGKILL)
    for proc in survivors:
        log.warning("process %d survived the end of run %s", proc.pid, marker)
    return [proc.pid for proc in survivors]


def open_to_others(path: Path, windows: bool = WINDOWS) -> bool:
    """True if the file's mode lets other users in (POSIX). On Windows the directory's ACL decides."""
    return not windows and bool(path.stat().st_mode & 0o077)


SECRETS_FD = "PROCQ_SECRETS_FD"  # how a re-executed server finds the secrets it was started with


def take_secrets(names: tuple[str, ...], windows: bool = WINDOWS) -> dict[str, str]:
    """The named secrets from the environment, which then no longer holds them: not os.environ, so
    no job inherits them, and on Linux not /proc/<pid>/environ either (any process of the same user
    can read that, and it keeps the environment the process was started with whatever os.environ
    says). So on POSIX, when one is set, this process re-executes itself (same pid, same arguments)
    without them and reads them back from a pipe. Windows has no such file: they are only removed."""
    inherited = os.environ.pop(SECRETS_FD, None)
    if inherited is not None:
        fd = int(inherited)
        with os.fdopen(fd, "rb") as pipe:
            return dict(json.loads(pipe.read().decode("utf-8")))
    found = {name: os.environ[name] for name in names if name in os.environ}
    if not found or windows:
        for name in found:
            del os.environ[name]
        return found
    read_end, write_end = os.pipe()
    os.write(write_end, json.dumps(found).encode("utf-8"))  # a few hundred bytes: within any pipe buffer
    os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {name: value for name, value in os.environ.items() if name not in found}
    env[SECRETS_FD] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # does not return
    raise AssertionError("unreachable")
