"""Test helpers shared by every level: job commands, polling with deadlines, a real procq server
process, and a real HTTP receiver for webhooks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def py(code: str) -> list[str]:
    """A job command that runs on every OS: the test interpreter with inline code."""
    return [sys.executable, "-c", code]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy and return its value; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ServerProcess:
    """run.py in a subprocess on a free loopback port with its own jobs directory."""

    def __init__(self, jobs_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.jobs_dir = jobs_dir
        self.log_path = jobs_dir.parent / f"server-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        cmd = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--jobs-dir", str(jobs_dir), *extra]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        self.url = self._read_url()
        self.http = requests.Session()

    def _read_url(self) -> str:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        match = re.search(r"http://[\d.]+:\d+", found[0]) if found else None
        if not match:
            self.proc.kill()
            raise AssertionError(f"server did not start; its log:\n{self.log()}")
        self.banner = found[0].strip()  # the first line the server printed: where it serves
        return match.group(0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=30, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.http.put(self.url + path, timeout=30, **kw)

    def submit(self, args: list[str], **fields: Any) -> dict[str, Any]:
        response = self.post("/jobs", json={"args": args, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/jobs/{job_id}/status")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_until(lambda: (job := self.status(job_id))["status"] in statuses and job, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send a shutdown signal and return the exit code (the server must exit by itself)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """Crash it: SIGKILL, no cleanup of any kind."""
        self.proc.kill()
        self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"server did not exit within {timeout} s; its log:\n{self.log()}") from None
        finally:
            self.http.close()
            self._log.close()
        return code


class Receiver:
    """A real local HTTP server that records webhook deliveries. `fail_next` makes the next N
    deliveries answer 500; `delay_s` makes each answer late."""

    def __init__(self, port: int = 0) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() of each recorded delivery
        self.headers: list[dict[str, str]] = []
        self.fail_next = 0
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.deliveries.append(json.loads(body))
                        receiver.times.append(time.monotonic())
                        receiver.headers.append(dict(self.headers))
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True  # a receiver can come back on the same port
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.deliveries) >= count, timeout)
        return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def end_keeper(jobs_dir: Path, timeout: float = 20.0) -> None:
    """End the keepers of `jobs_dir` (of every protocol version) and their runs, whatever a test did
    (tests SIGKILL servers, which leaves the keeper and its jobs running by design)."""
    import psutil

    from procq.actors.keeper import protocol
    from procq.actors.keeper.client import KeeperClient, KeeperError

    for version in protocol.running_versions(jobs_dir):
        try:
            info = json.loads((jobs_dir / protocol.info(version)).read_text())
        except (OSError, ValueError):
            continue
        try:
            client = KeeperClient.connect_minimal(jobs_dir, version)
            for run in client.runs():
                client.stop(run["run"], 0, "test over")
            client.drain()
            client.close()
        except KeeperError:
            pass
        try:
            proc = psutil.Process(info["pid"])
            proc.wait(timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            proc.kill()


def kill_machine(node: ServerProcess, *pids: int | None) -> None:
    """A node's machine is gone: SIGKILL its server, its keeper, every process running in one of its
    job directories (every job runs with its directory as cwd) and the given pids. A test that killed
    only the server and the keeper left the jobs running for good, orphans of init."""
    import psutil

    from procq.actors.keeper import protocol

    keeper = json.loads((node.jobs_dir / protocol.INFO).read_text())["pid"]
    node.kill()
    root = str(node.jobs_dir.resolve()) + os.sep
    for _ in range(3):  # a spawn the keeper had begun may show up a moment later
        found = [proc.pid for proc in psutil.process_iter(["cwd"]) if (proc.info.get("cwd") or "").startswith(root)]
        for pid in (keeper, *pids, *found):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)
