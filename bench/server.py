"""A real procq server for the bench: run.py in a subprocess on a loopback port with its own jobs dir."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.client import Client

ROOT = Path(__file__).resolve().parent.parent


class BenchServer:
    """run.py started with `--workers 2` (unless told) on `jobs_dir`; `url` once it printed its address.

    `port=0` lets the server pick; the chaos harness passes a fixed port so clients survive restarts.
    Its stderr goes to a log file next to the jobs directory (kept for post-mortems).
    """

    def __init__(
        self, jobs_dir: Path, *flags: str, port: int = 0, workers: int = 2, ready_timeout_s: float = 60
    ) -> None:
        self.jobs_dir = jobs_dir
        jobs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = jobs_dir.parent / f"{jobs_dir.name}-server-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        cmd = [sys.executable, str(ROOT / "run.py"), "--port", str(port), "--jobs-dir", str(jobs_dir)]
        cmd += ["--workers", str(workers), *flags]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT)
        self.ps = psutil.Process(self.proc.pid)
        self.url = self._read_url(ready_timeout_s)
        self.host, port_text = self.url.removeprefix("http://").split(":")
        self.port = int(port_text)

    def _read_url(self, timeout_s: float) -> str:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(timeout=timeout_s)
        match = re.search(r"http://[\d.]+:\d+", found[0]) if found else None
        if not match:
            self.proc.kill()
            self.wait(10)
            raise RuntimeError(f"procq did not start; its log:\n{self.log()[-4000:]}")
        return match.group(0)

    def client(self) -> Client:
        return Client(self.host, self.port)

    def wait_ready(self, timeout_s: float = 30) -> float:
        """Poll GET /health until 200; returns seconds since the process was started."""
        deadline = time.monotonic() + timeout_s
        with self.client() as http:
            while time.monotonic() < deadline:
                try:
                    if http.request("GET", "/health")[0] == 200:
                        return time.perf_counter() - self.started
                except OSError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"procq not ready within {timeout_s} s; its log:\n{self.log()[-4000:]}")

    def keeper(self) -> psutil.Process | None:
        """The keeper process of this server's jobs directory (it spawns every job), if one runs."""
        for info in self.jobs_dir.glob(".keeper-*.json"):
            try:
                return psutil.Process(int(json.loads(info.read_bytes())["pid"]))
            except (OSError, ValueError, KeyError, psutil.Error):
                continue
        return None

    def cpu_s(self) -> float:
        """CPU seconds used so far by the server and its keeper (not by the jobs they ran)."""
        total = 0.0
        for proc in (self.ps, self.keeper()):
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        return self.ps.memory_info().rss

    def threads(self) -> int:
        return self.ps.num_threads()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        """A graceful stop (SIGTERM, or TerminateProcess on Windows); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout_s)

    def kill(self) -> None:
        """A crash: SIGKILL, no cleanup of any kind."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()
            if self.proc.stdout:
                self.proc.stdout.close()
