"""The keeper process: its lock, its channel, the connections of servers, and when it exits.

`python -m procq.actors.keeper --jobs-dir DIR` runs it in the foreground; the server starts it
detached (client.start). It exits when a server asked it to drain and no run is left, never because a
server went away.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from procq.actors import osdeps
from procq.actors.keeper import protocol, records
from procq.actors.keeper.fence import Fence
from procq.actors.keeper.runs import Runs

log = logging.getLogger("procq.keeper")


class Keeper:
    """Serves one jobs directory. Each connection has its own thread; requests on a connection are
    answered in order. Event subscribers get every exit record once it is on disk."""

    def __init__(self, jobs_dir: Path) -> None:
        self._jobs_dir = jobs_dir
        self._exit = threading.Event()
        self._draining = False
        self._subscribers: dict[Connection, threading.Lock] = {}
        self._subs_lock = threading.Lock()
        self._runs = Runs(jobs_dir, self._publish, self._check_idle)
        self._fence = Fence(self._runs.fence)

    def serve(self) -> int:
        """Run until drained. Returns the process exit status (3: another keeper holds the lock)."""
        try:
            lock = osdeps.lock_exclusively(self._jobs_dir / protocol.LOCK)
        except OSError:
            log.info("another keeper serves %s", self._jobs_dir)
            return 3
        try:
            key = protocol.load_key(self._jobs_dir, create=True)
            subreaper = osdeps.become_subreaper()
            address, family = protocol.address(self._jobs_dir)
            if family == "AF_UNIX":
                Path(address).unlink(missing_ok=True)  # we hold the lock: a socket there is a dead keeper's
            listener = Listener(address, family, authkey=key)
            info = {
                "pid": os.getpid(),
                "pid_started_at": osdeps.identity(os.getpid())[1],
                "version": protocol.VERSION,
                "started_at": records.now_iso(),
                "subreaper": subreaper,
            }
            (self._jobs_dir / protocol.INFO).write_text(json.dumps(info), encoding="utf-8")
            log.info("keeper %d serving %s (subreaper: %s)", os.getpid(), self._jobs_dir, subreaper)
            threading.Thread(target=self._runs.reap_forever, daemon=True, name="reaper").start()
            threading.Thread(target=self._accept, args=(listener,), daemon=True, name="accept").start()
            while not self._exit.wait(0.5):  # a bare wait would ignore Ctrl+C on Windows
                pass
            self._runs.end_strays()
            listener.close()
            if family == "AF_UNIX":
                Path(address).unlink(missing_ok=True)
            (self._jobs_dir / protocol.INFO).unlink(missing_ok=True)
            log.info("keeper %d: drained, exiting", os.getpid())
            return 0
        finally:
            lock.close()

    def _accept(self, listener: Listener) -> None:
        while not self._exit.is_set():
            try:
                conn = listener.accept()  # checks the auth key before anything is read
            except Exception as exc:  # a client with a wrong key, or one that hung up mid-handshake
                if not self._exit.is_set():
                    log.warning("keeper: refused a connection: %r", exc)
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True, name="conn").start()

    def _serve_connection(self, conn: Connection) -> None:
        try:
            hello = conn.recv()
            minimal = isinstance(hello, dict) and hello.get("op") == "hello" and hello.get("role") == "minimal"
            why = None if minimal else _hello_refusal(hello)
            if why is not None:
                conn.send({"ok": False, "error": why, "versions": [protocol.VERSION]})
                return
            conn.send({"ok": True, "version": protocol.VERSION, "pid": os.getpid(), "draining": self._draining})
            if hello.get("role") == "events":
                self._follow(conn)
                return
            while True:
                conn.send(self._handle(conn.recv(), minimal))
        except (EOFError, OSError):
            pass  # the server went away; its runs go on
        except Exception:
            log.exception("keeper: a connection failed")
        finally:
            conn.close()

    def _handle(self, request: Any, minimal: bool = False) -> dict[str, Any]:
        """Answer one request; on a minimal connection (a server of another version) only the stable
        MINIMAL_OPS, which every keeper version answers the same forever."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a dict with an 'op'"}
        op = request.get("op")
        if minimal and op not in protocol.MINIMAL_OPS:
            return {"ok": False, "error": f"{op!r} is not in the minimal protocol ({', '.join(protocol.MINIMAL_OPS)})"}
        if op == "spawn":
            if self._draining:
                return {"ok": False, "error": "this keeper is draining: it takes no new runs and exits when idle"}
            return self._runs.spawn(request)
        if op == "stop":
            return self._runs.stop(str(request.get("run")), float(request.get("grace_s", 5.0)), str(request["reason"]))
        if op == "fence":
            within = request.get("within_s")
            self._fence.arm(None if within is None else float(within), float(request.get("grace_s", 0.0)))
            return {"ok": True}
        if op == "list":
            return {"ok": True, "runs": self._runs.describe()}
        if op == "drain":
            self._draining = True
            self._check_idle()
            return {"ok": True}
        if op == "attach":
            self._draining = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}; this keeper speaks protocol {protocol.VERSION}"}

    def _follow(self, conn: Connection) -> None:
        with self._subs_lock:
            self._subscribers[conn] = threading.Lock()
        try:
            while True:
                conn.recv()  # nothing is expected; returns at EOF when the server goes away
        finally:
            with self._subs_lock:
                self._subscribers.pop(conn, None)

    def _publish(self, record: dict[str, Any]) -> None:
        with self._subs_lock:
            subscribers = list(self._subscribers.items())
        for conn, lock in subscribers:
            try:
                with lock:
                    conn.send({"event": "exited", "record": record})
            except (OSError, ValueError):
                pass  # it went away; its reader thread removes it

    def _check_idle(self) -> None:
        if self._draining and self._runs.idle():
            self._exit.set()


def _hello_refusal(hello: Any) -> str | None:
    if not isinstance(hello, dict) or hello.get("op") != "hello":
        return "the first message must be {'op': 'hello', 'version': N}"
    return protocol.refusal(hello.get("version"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m procq.actors.keeper", description=__doc__)
    parser.add_argument("--jobs-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s keeper[%(process)d] %(message)s"
    )
    return Keeper(args.jobs_dir.resolve()).serve()
