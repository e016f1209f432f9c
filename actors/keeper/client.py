"""The server's side of the keeper channel: start the keeper if none runs, then ask it things.

A KeeperClient holds one control connection (requests answered in order; a lock makes it usable from
any thread) and, once `follow` is called, one events connection read by one thread for every run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procq.actors import osdeps
from procq.actors.keeper import protocol

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger("procq.keeper.client")

_STARTS = 3  # keepers started by one `ensure`, when each dies before it listens
_REPLY_TIMEOUT_S = 30.0  # a keeper that does not answer within this is treated as gone


class KeeperError(Exception):
    """Raised when the keeper cannot be reached, or refuses a request (the message says why)."""


class KeeperLost(KeeperError):
    """The connection broke during a request: the keeper went away (died) before it answered, so
    whether it acted on the request is unknown. A refusal is a plain KeeperError."""


class KeeperClient:
    """A connection to the keeper of one jobs directory."""

    def __init__(self, jobs_dir: Path, conn: Connection, hello: dict[str, Any], version: int) -> None:
        self.jobs_dir = jobs_dir
        self.pid: int = hello["pid"]
        self.version = version
        self._conn = conn
        self._lock = threading.Lock()
        self._unanswered = 0  # requests that timed out: their replies, if they come, come first
        self._events: Connection | None = None

    # --- connecting -----------------------------------------------------------------------------

    @classmethod
    def connect(cls, jobs_dir: Path, version: int = protocol.VERSION, role: str = "control") -> KeeperClient:
        """Connect to the running keeper; KeeperError if none runs or it refuses us."""
        conn = _open(jobs_dir, version)
        hello = _hello(conn, version, role)
        return cls(jobs_dir, conn, hello, version)

    @classmethod
    def connect_minimal(cls, jobs_dir: Path, version: int) -> KeeperClient:
        """Connect to the keeper of another protocol `version` in the stable minimal protocol (list,
        stop, drain: protocol.MINIMAL_OPS); KeeperError if none runs or it refuses us."""
        conn = _open(jobs_dir, version)
        hello = _hello(conn, version, "minimal")
        return cls(jobs_dir, conn, hello, version)

    @classmethod
    def ensure(cls, jobs_dir: Path, timeout_s: float = 15.0) -> KeeperClient:
        """Connect to the keeper of `jobs_dir`, starting one first if none runs (two never run: the
        keeper holds a lock, and a second one exits at once)."""
        try:
            return cls.connect(jobs_dir)
        except KeeperError:
            pass
        keeper, starts = start(jobs_dir), 1
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return cls.connect(jobs_dir)
            except KeeperError as exc:
                # One that died before it listened (killed, or it lost the lock to another that
                # starts just now) is replaced: a few times, not for good.
                if keeper.poll() is not None and starts < _STARTS:
                    keeper, starts = start(jobs_dir), starts + 1
                elif time.monotonic() >= deadline:
                    log_tail = _tail(jobs_dir / protocol.LOG)
                    message = f"the keeper did not start within {timeout_s:g} s ({exc}); its log:\n{log_tail}"
                    raise KeeperError(message) from None
            time.sleep(0.02)

    # --- requests -------------------------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply; KeeperError if the keeper refuses or is gone."""
        with self._lock:
            try:
                self._conn.send({"op": op, **fields})
                while True:  # the keeper answers in order: skip the late replies of requests that timed out
                    if not self._conn.poll(_REPLY_TIMEOUT_S):
                        self._unanswered += 1
                        raise KeeperError(f"the keeper did not answer {op!r} within {_REPLY_TIMEOUT_S:g} s")
                    reply = self._conn.recv()
                    if not self._unanswered:
                        break
                    self._unanswered -= 1
            # TypeError: the link closed this connection from its events thread (the keeper is gone) mid-read.
            except (EOFError, OSError, TypeError) as exc:
                raise KeeperLost(f"the keeper went away: {exc!r}") from exc
        if not reply.get("ok"):
            raise KeeperError(reply.get("error") or f"the keeper refused {op!r}")
        return reply

    def spawn(
        self,
        job_id: str,
        attempt: int,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        grace_s: float = 5.0,
        run_as: str | None = None,
    ) -> dict[str, Any]:
        """Start attempt `attempt` of a job, its output going to jobs/<id>/stdout.txt and stderr.txt,
        as the user `run_as` if given (--run-as). Returns {pid, pid_started_at, started_at}."""
        run = protocol.run_id(job_id, attempt)
        cwd_text = str(cwd) if cwd is not None else None
        fields = {"args": list(args), "env": dict(env), "cwd": cwd_text, "grace_s": grace_s, "run_as": run_as}
        return self.request("spawn", run=run, **fields)

    def stop(self, run: str, grace_s: float, reason: str) -> bool:
        """Ask the keeper to end the run's tree; False if it does not run it (any more)."""
        return bool(self.request("stop", run=run, grace_s=grace_s, reason=reason)["running"])

    def runs(self) -> list[dict[str, Any]]:
        return list(self.request("list")["runs"])

    def drain(self) -> None:
        """Take no new runs; exit once the running ones have ended (their records written)."""
        self.request("drain")

    def attach(self) -> None:
        """A server works with this keeper again: it no longer exits when idle."""
        self.request("attach")

    def fence(self, within_s: float | None, grace_s: float) -> None:
        """Cluster mode: unless fenced again within `within_s` seconds, the keeper ends every run
        (None lifts the fence: a single machine's server)."""
        self.request("fence", within_s=within_s, grace_s=grace_s)

    def follow(self, on_exit: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        """Call `on_exit(record)` for every run that ends from now on, from one reader thread; then
        `on_lost()` once if the keeper goes away. Subscribe before listing runs, so no end is missed."""
        events = _open(self.jobs_dir, self.version)
        _hello(events, self.version, "events")
        self._events = events
        args = (events, on_exit, on_lost)
        reader = threading.Thread(target=_read_events, args=args, daemon=True, name="keeper-events")
        reader.start()

    def close(self) -> None:
        for conn in (self._conn, self._events):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass


def start(jobs_dir: Path) -> subprocess.Popen[bytes]:
    """Start a keeper for `jobs_dir`, detached from this process; returns its process. It inherits no
    PROCQ_* setting (but the PROCQ_TEST_* hooks, which do nothing unless a test sets them) and no
    open file but its log."""
    env = {name: value for name, value in os.environ.items() if not _withheld(name)}
    args = [sys.executable, "-m", "procq.actors.keeper", "--jobs-dir", str(jobs_dir)]
    with open(jobs_dir / protocol.LOG, "ab") as log_file:
        return osdeps.start_detached(args, jobs_dir, env, log_file)


def _withheld(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("PROCQ_") and not upper.startswith("PROCQ_TEST_")


def _open(jobs_dir: Path, version: int) -> Connection:
    address, family = protocol.address(jobs_dir, version)
    try:
        key = protocol.load_key(jobs_dir, create=False)
    except FileNotFoundError as exc:
        raise KeeperError(f"no keeper key in {jobs_dir}: no keeper has run there") from exc
    try:
        return Client(address, family, authkey=key)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise KeeperError(f"no keeper listens at {address}") from exc
    except AuthenticationError as exc:
        raise KeeperError(f"the keeper at {address} refused the key in {jobs_dir / protocol.KEY}") from exc
    except (EOFError, OSError) as exc:  # it hung up during the handshake: exiting, or killed
        raise KeeperError(f"the keeper at {address} hung up: {exc!r}") from exc


def _hello(conn: Connection, version: int, role: str) -> dict[str, Any]:
    try:
        conn.send({"op": "hello", "version": version, "role": role})
        if not conn.poll(_REPLY_TIMEOUT_S):
            raise KeeperError("the keeper did not answer hello")
        reply = conn.recv()
    except (EOFError, OSError) as exc:
        conn.close()
        raise KeeperError(f"the keeper hung up during hello: {exc!r}") from exc
    if not reply.get("ok"):
        conn.close()
        raise KeeperError(reply.get("error") or "the keeper refused hello")
    return reply


def _read_events(conn: Connection, on_exit: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
    try:
        while True:
            message = conn.recv()
            if message.get("event") == "exited":
                try:
                    on_exit(message["record"])
                except Exception:  # one bad handler must not stop the stream for every other run
                    log.exception("handling an exit record failed")
    # A connection closed by another thread mid-read can also raise TypeError (its handle is gone).
    except (EOFError, OSError, TypeError):
        pass
    on_lost()


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_bytes()[-size:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
