"""Scenario 6, big output: one job writing GiBs to stdout, then GET /result streaming it back."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.client import epoch
from bench.report import Row
from bench.server import BenchServer

CHUNK = 1 << 20


def writer(mib: int) -> list[str]:
    """A command writing `mib` MiB of zeros to stdout in 1 MiB writes."""
    code = f"import sys\nb = bytes({CHUNK})\nw = sys.stdout.buffer.write\nfor _ in range({mib}): w(b)"
    return [sys.executable, "-c", code]


def _run_locally(path: Path, mib: int) -> float:
    """Seconds the writer takes outside procq, its stdout going to a fresh file (kept until the end,
    as procq's is: no unlink or discard inside the measurement)."""
    with open(path, "wb") as out:
        before = time.perf_counter()
        subprocess.run(writer(mib), stdout=out, check=True)
        return time.perf_counter() - before


def read_file(path: Path) -> float:
    """Seconds to read a file in 1 MiB chunks (the file is in the page cache, as it is for the server)."""
    before = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(CHUNK):
            pass
    return time.perf_counter() - before


def loopback_ceiling(path: Path) -> float:
    """Seconds to move the file over a loopback TCP connection with sendfile() into the same 1 MiB
    read loop: what any HTTP server on this machine could at best do, the bound for GET /result."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, open(path, "rb") as handle:
            conn.sendfile(handle)

    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    before = time.perf_counter()
    with socket.create_connection(listener.getsockname()) as conn:
        while conn.recv(CHUNK):
            pass
    took = time.perf_counter() - before
    sender.join()
    listener.close()
    return took


class MemoryWatch:
    """Samples the server's resident memory every 50 ms in a thread; `peak` is the highest seen."""

    def __init__(self, server: BenchServer) -> None:
        self.base = self.peak = server.rss_bytes()
        self._server, self._stop = server, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._server.rss_bytes())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def run(work: Path, limit: float, mib: int, pairs: int = 3) -> list[Row]:
    size = mib * CHUNK
    server = BenchServer(work / "jobs")
    try:
        server.wait_ready()
        watch = MemoryWatch(server)
        with server.client() as http:
            # Alternate runs outside and inside procq and compare medians: the writeback of the previous
            # GiB slows whoever writes next, and one pair alone is mostly noise on a shared disk.
            local_runs, procq_runs = [], []
            for attempt in range(pairs):
                local_runs.append(_run_locally(work / f"local-{attempt}.out", mib))
                job = http.submit(writer(mib))
                while (job := http.status(job["id"]))["status"] not in ("COMPLETED", "FAILED"):
                    time.sleep(0.05)
                if job["status"] != "COMPLETED":
                    raise RuntimeError(f"the big job failed: {job}")
                procq_runs.append(epoch(job["completed_at"]) - epoch(job["started_at"]))
            local_s, run_s = statistics.median(local_runs), statistics.median(procq_runs)
            before = time.perf_counter()
            response = http.stream(f"/jobs/{job['id']}/result")
            got = 0
            while chunk := response.read(CHUNK):
                got += len(chunk)
            get_s = time.perf_counter() - before
            if response.status != 200 or got != size:
                raise RuntimeError(f"GET /result answered {response.status} with {got} of {size} bytes")
        watch.close()
        file_s = read_file(work / "jobs" / job["id"] / "stdout.txt")
        tcp_s = loopback_ceiling(work / "jobs" / job["id"] / "stdout.txt")

    finally:
        server.stop()
    gib = size / 2**30
    growth = (watch.peak - watch.base) / 2**20
    return [
        Row(
            "6 big output",
            f"job writing {mib} MiB: speed vs same command > file (medians of {pairs} pairs)",
            f"{gib / run_s:.2f} GiB/s",
            local_s / run_s,
            "outside procq",
            "≈ disk speed (≥ 0.8)",
            local_s / run_s >= 0.8,
        ),
        Row(
            "6 big output",
            "GET /result streaming",
            f"{gib / get_s:.2f} GiB/s",
            file_s / get_s,
            "local file read",
            "≥ 0.5",
            file_s / get_s >= 0.5,
        ),
        Row(
            "6 big output",
            "GET /result against loopback TCP (sendfile → same reader)",
            f"{gib / tcp_s:.2f} GiB/s (TCP)",
            tcp_s / get_s,
            "loopback ceiling",
        ),
        Row(
            "6 big output",
            "server memory growth, run + download",
            f"{growth:.1f} MB",
            None,
            "",
            "flat (< 50 MB)",
            growth < 50,
        ),
    ]
