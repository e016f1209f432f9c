"""The keeper's OS calls: its channel, starting it detached, spawning runs, reaping, and ending whole runs."""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import IO, Any

import psutil

from procq.actors.osdeps.common import _CTIME_TOLERANCE_S, WINDOWS, _quietly, log
from procq.actors.osdeps.processes import (
    CREATE_NEW_PROCESS_GROUP,
    CREATE_NO_WINDOW,
    _freeze,
    _signal_group,
    _wait_gone,
    spawn_kwargs,
)
from procq.actors.osdeps.users import RunAs, run_as_kwargs

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


def start_detached(args: list[str], cwd: Path, env: dict[str, str], log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start `args` detached (see detached_kwargs) and return its process. A Windows job object that
    forbids breakaway refuses the flag; the keeper then starts inside it (a service must allow it)."""
    common = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": log_file, "cwd": cwd, "env": env}
    try:
        return subprocess.Popen(args, **common, **detached_kwargs())
    except PermissionError:
        if not WINDOWS:
            raise
        return subprocess.Popen(args, **common, **detached_kwargs(breakaway=False))


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
