"""The keeper's runs: spawning job processes, the one reaper, ending trees, and exit records.

Before each spawn the run's intent is made durable (intents.py), so a restarting server can tell an
attempt that never reached a process from one that may have run.

Threads: the reaper (one, for every child); a recorder (writes exit records and tells the server,
so the reaper never waits on a disk); two syncers (make the records durable afterwards: two fsyncs
in flight share the file system's journal commits, and the recorder never waits on one); a
short-lived stopper per tree being ended; the connection threads that call spawn/stop/list. One lock
guards the tables; nothing slow runs under it but the spawn itself (so the reaper never sees a child
it does not know yet).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

from procq.actors import osdeps
from procq.actors.keeper import intents, protocol, records
from procq.actors.supervise.faults import crash_point

log = logging.getLogger("procq.keeper")

SYNCERS = 2  # threads making exit records durable; fsyncs in flight together cost about one

Notify = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class Run:
    """One attempt the keeper started. Mutable, guarded by Runs._lock."""

    run: str
    job_id: str
    attempt: int
    job_dir: Path
    child: Any  # subprocess.Popen
    job_object: Any  # Windows job object, None on POSIX
    pid: int
    pid_started_at: float
    started_at: str
    inherited_rss: int
    grace_s: float
    stop_reason: str | None = None  # why its tree is (being) ended: a request, or "leftovers"
    stopping: bool = False  # a stopper thread is at work
    reaped: osdeps.Reaped | None = None
    finishing: bool = False  # its record is being written
    fenced: bool = False  # the fence ended (or is ending) its tree
    survivors: list[int] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "pid": self.pid,
            "pid_started_at": self.pid_started_at,
            "started_at": self.started_at,
            "stopping": self.stop_reason,
            "ended": self.reaped is not None,
        }


class Runs:
    """Every run this keeper has started and not yet recorded."""

    def __init__(self, jobs_dir: Path, notify: Notify, on_idle: Callable[[], None]) -> None:
        self._jobs_dir = jobs_dir
        self._notify = notify
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._intent_lock = threading.Lock()
        self._by_pid: dict[int, Run] = {}
        self._by_run: dict[str, Run] = {}
        self._strays: dict[int, str | None] = {}  # orphans handed to us (subreaper) -> their run marker
        self._spawned = threading.Event()
        self._wake_reader, self._wake = Pipe(duplex=False)  # Windows: wakes the handle wait on a spawn
        self._to_record: queue.SimpleQueue[Run] = queue.SimpleQueue()
        self._to_sync: queue.SimpleQueue[tuple[Run, bool]] = queue.SimpleQueue()
        self._unsynced = 0  # records told but not yet durable: the keeper is not idle until they are
        threading.Thread(target=self._record_forever, daemon=True, name="recorder").start()
        for n in range(SYNCERS):
            threading.Thread(target=self._sync_forever, daemon=True, name=f"syncer-{n}").start()

    # --- requests -------------------------------------------------------------------------------

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start one attempt; the reply says its pid, or why not (never two processes for one run)."""
        parsed = protocol.parse_run(str(request.get("run")))
        if parsed is None:
            return _error(f"run {request.get('run')!r} is not <job id>.<attempt>")
        job_id, attempt = parsed
        job_dir = self._jobs_dir / job_id
        args = request.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return _error("args must be a non-empty list of strings")
        env = {str(k): str(v) for k, v in dict(request.get("env") or {}).items()}
        env[osdeps.RUN_MARKER] = request["run"]
        try:
            run_as = osdeps.lookup_run_as(request["run_as"]) if request.get("run_as") else None
        except ValueError as exc:
            return _error(str(exc))
        if records.read(job_dir, attempt) is not None:
            return _error(f"run {request['run']} has already run (its exit record exists); it is not started twice")
        crash_point("keeper-before-intent")
        refused = self._intend(request["run"], job_dir, attempt)
        if refused is not None:
            return refused
        crash_point("keeper-after-intent")
        try:
            stdout = open(job_dir / "stdout.txt", "wb")  # noqa: SIM115 - the child holds its own copy
        except OSError as exc:
            return _error(f"could not open the job's output files: {exc}")
        try:
            with stdout, open(job_dir / "stderr.txt", "wb") as stderr, self._lock:
                if request["run"] in self._by_run:
                    return _error(f"run {request['run']} is already running; it is not started twice")
                floor = osdeps.inherited_rss()
                osdeps.give_to([job_dir, job_dir / "stdout.txt", job_dir / "stderr.txt"], run_as)
                cwd = Path(request.get("cwd") or job_dir)
                child, job_object = osdeps.spawn_run(args, cwd, env, stdout, stderr, run_as)
                pid, created = osdeps.identity(child.pid)
                run = Run(
                    request["run"],
                    job_id,
                    attempt,
                    job_dir,
                    child,
                    job_object,
                    pid,
                    created,
                    records.now_iso(),
                    floor,
                    float(request.get("grace_s", 5.0)),
                )
                self._by_pid[pid] = self._by_run[run.run] = run
                self._spawned.set()
                if osdeps.WINDOWS:  # only the handle wait reads it; elsewhere it would fill up
                    self._wake.send_bytes(b"s")
        except OSError as exc:
            return _error(f"could not start {args[0]!r}: {exc.strerror or exc}", errno=exc.errno)
        log.debug("run %s: started pid %d", run.run, pid)  # the server logs every start and end at INFO
        crash_point("keeper-after-spawn")
        return {"ok": True, "pid": pid, "pid_started_at": created, "started_at": run.started_at}

    def _intend(self, name: str, job_dir: Path, attempt: int) -> dict[str, Any] | None:
        """Write the run's spawn intent durably, before its process can exist; an error reply if the
        run is running, or may have started already (a late request of a server that died)."""
        with self._intent_lock:  # one check-then-write at a time: two requests cannot both pass
            with self._lock:
                if name in self._by_run:
                    return _error(f"run {name} is already running; it is not started twice")
            if intents.read(job_dir, attempt) is not None:
                return _error(f"run {name} may have started already (its spawn intent exists); it is not started twice")
            try:
                intents.write(job_dir, {"run": name, "attempt": attempt, "keeper_pid": os.getpid()})
            except OSError as exc:
                return _error(f"could not record the start of run {name}: {exc}")
        return None

    def stop(self, name: str, grace_s: float, reason: str) -> dict[str, Any]:
        """End the run's whole tree (in the background); its exit record follows as for any end."""
        with self._lock:
            run = self._by_run.get(name)
            if run is None or run.finishing:
                return {"ok": True, "running": False}
            if run.stop_reason is None or run.stop_reason == "leftovers":
                run.stop_reason = reason
            if run.stopping:
                return {"ok": True, "running": True}
            run.stopping = True
        self._start_stopper(run, grace_s)
        return {"ok": True, "running": True}

    def fence(self, grace_s: float, reason: str) -> None:
        """End every run's tree within `grace_s` (cluster mode: the server's lease ran out). A tree
        already being ended with a longer grace is ended again with this one; a cancel keeps its reason."""
        starting, hastening = [], []
        with self._lock:
            for run in self._by_run.values():
                if run.fenced or run.finishing:
                    continue
                run.fenced = True
                if run.stop_reason is None or run.stop_reason == "leftovers":
                    run.stop_reason = reason
                (hastening if run.stopping else starting).append(run)
                run.stopping = True
        for run in starting:
            self._start_stopper(run, grace_s)
        for run in hastening:  # the first stopper records the run once its tree is gone
            args = (run.pid, run.pid_started_at, run.run, grace_s, run.job_object)
            threading.Thread(target=osdeps.stop_run, args=args, daemon=True, name=f"fence-{run.run}").start()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [run.describe() for run in self._by_run.values()]

    def idle(self) -> bool:
        with self._lock:
            return not self._by_run and not self._unsynced

    def end_strays(self) -> None:
        """End orphans still handed to us (before the keeper exits, so none outlives it unnamed)."""
        with self._lock:
            known = set(self._by_pid)
        for pid in osdeps.adopted(known):
            osdeps.stop_run(pid, osdeps.identity(pid)[1], f"stray-{pid}", 0.0)

    # --- the reaper -----------------------------------------------------------------------------

    def reap_forever(self) -> None:
        """The one reaper: every child of the keeper is reaped here, whatever run it belongs to."""
        while True:
            if osdeps.WINDOWS:
                with self._lock:
                    children = {run.pid: run.child for run in self._by_run.values() if run.reaped is None}
                reaped = osdeps.reap_handles(children, self._wake_reader, None)
            else:
                self._spawned.clear()
                try:
                    reaped = [osdeps.reap_any()]
                except ChildProcessError:
                    self._spawned.wait(1.0)
                    continue
            for one in reaped:
                try:
                    self._reaped(one)
                except Exception:  # the reaper must live on: every other run depends on it
                    log.exception("keeper: handling the exit of pid %d failed", one.pid)

    def _reaped(self, reaped: osdeps.Reaped) -> None:
        with self._lock:
            run = self._by_pid.get(reaped.pid)
            if run is None:  # an orphan of some run, handed to us as subreaper
                self._strays.pop(reaped.pid, None)
                return
            run.child.returncode = reaped.exit_code  # Popen must not wait for a pid that may be reused
            run.reaped = reaped
            if run.stopping:
                return  # the stopper records the run once the tree is gone
            if run.stop_reason is None and self._left_over(run):
                run.stop_reason, run.stopping = "leftovers", True
                start = True
            else:
                run.finishing, start = True, False
        if start:
            self._start_stopper(run, run.grace_s)
        else:
            self._finish(run)

    def _left_over(self, run: Run) -> bool:
        """Did the run leave processes behind? Its group (or job object), or orphans carrying its
        marker. Called under the lock, right after the root was reaped: cheap in the usual case."""
        if osdeps.group_alive(run.pid, run.job_object):
            return True
        for pid in osdeps.adopted(set(self._by_pid)):
            if pid not in self._strays:
                self._strays[pid] = osdeps.run_of(pid)
        return run.run in self._strays.values()

    # --- ending trees and recording ---------------------------------------------------------------

    def _start_stopper(self, run: Run, grace_s: float) -> None:
        threading.Thread(target=self._stop_tree, args=(run, grace_s), daemon=True, name=f"stop-{run.run}").start()

    def _stop_tree(self, run: Run, grace_s: float) -> None:
        try:
            survivors = osdeps.stop_run(run.pid, run.pid_started_at, run.run, grace_s, run.job_object)
        except Exception:
            log.exception("run %s: ending its tree failed", run.run)
            survivors = [run.pid]
        with self._lock:
            run.survivors, run.stopping = survivors, False
            done = run.reaped is not None and not run.finishing
            if done:
                run.finishing = True
        if done:
            self._finish(run)

    def _finish(self, run: Run) -> None:
        self._to_record.put(run)

    def _record_forever(self) -> None:
        while True:
            run = self._to_record.get()
            try:
                self._record(run)
            except Exception:  # a recorder must live on
                log.exception("run %s: recording its end failed", run.run)

    def _record(self, run: Run) -> None:
        """Write the run's exit record, forget the run, then tell the subscribers: in that order, so
        whoever hears of the end (or lists runs) finds the record."""
        reaped = run.reaped
        assert reaped is not None
        rss = reaped.peak_rss_bytes if reaped.peak_rss_bytes and reaped.peak_rss_bytes > run.inherited_rss else None
        record = {
            "run": run.run,
            "job_id": run.job_id,
            "attempt": run.attempt,
            "pid": run.pid,
            "pid_started_at": run.pid_started_at,
            "started_at": run.started_at,
            "ended_at": records.now_iso(),
            "exit_code": reaped.exit_code,
            "signal": reaped.signal,
            "stopped": run.stop_reason,
            "survivors": run.survivors,
            "usage": {"cpu_user_s": reaped.cpu_user_s, "cpu_system_s": reaped.cpu_system_s, "peak_rss_bytes": rss},
            "keeper_version": protocol.VERSION,
        }
        try:
            records.write(run.job_dir, record, durable=False)
        except OSError as exc:
            log.error("run %s: could not write its exit record: %s", run.run, exc)
            record["unrecorded"] = str(exc)
        with self._lock:
            self._by_pid.pop(run.pid, None)
            self._by_run.pop(run.run, None)
            self._unsynced += 1
        log.debug("run %s: exited %d", run.run, reaped.exit_code)
        self._notify(record)
        self._to_sync.put((run, "unrecorded" not in record))

    def _sync_forever(self) -> None:
        while True:
            run, written = self._to_sync.get()
            try:
                if written:
                    records.sync(run.job_dir)
            except OSError as exc:
                log.error("run %s: could not make its exit record durable: %s", run.run, exc)
            except Exception:  # a syncer must live on
                log.exception("run %s: making its exit record durable failed", run.run)
            with self._lock:
                self._unsynced -= 1
                idle = not self._by_run and not self._unsynced
            if idle:
                self._on_idle()


def _error(message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": message, **extra}
