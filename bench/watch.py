"""Bench: GET /jobs with 100,000 jobs on disk, and the cost of many log followers of one job.

    python bench/watch.py [--jobs 100000] [--followers 100]

Builds a jobs directory of finished jobs (meta.json only), starts run.py on it, and reports the start-up
time, list latencies (first page, filters, deep cursors, limit=500), then follows one job that writes a
stamped line every 50 ms with N clients at once: server CPU while they follow, and how late lines arrive.
Numbers depend on the machine; they are for comparing changes, not promises.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procq.actors.job import IdGenerator  # noqa: E402

STATUSES = ["COMPLETED"] * 90 + ["FAILED"] * 9 + ["CANCELED"]


def build(jobs_dir: Path, count: int) -> None:
    new_id = IdGenerator()
    for n in range(count):
        job_id = new_id()
        path = jobs_dir / job_id
        path.mkdir()
        meta = {
            "id": job_id,
            "args": ["echo", str(n)],
            "status": STATUSES[n % len(STATUSES)],
            "enqueued_at": "2026-01-01T00:00:00.000000Z",
            "started_at": "2026-01-01T00:00:00.100000Z",
            "completed_at": "2026-01-01T00:00:01.000000Z",
            "exit_code": 0,
            "attempts": 1,
            "tags": ["rare"] if n % 1000 == 0 else ["bulk", f"shard:{n % 10}"],
        }
        (path / "meta.json").write_bytes(json.dumps(meta).encode())


def start(jobs_dir: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str, float]:
    began = time.monotonic()
    cmd = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--jobs-dir", str(jobs_dir), "--retention", "0"]
    proc = subprocess.Popen([*cmd, *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    line = proc.stdout.readline().decode()
    url = re.search(r"http://[\d.]+:\d+", line).group(0)
    return proc, url, time.monotonic() - began


def timed(session: requests.Session, url: str, rounds: int) -> tuple[float, float, dict]:
    times = []
    body: dict = {}
    for _ in range(rounds):
        began = time.perf_counter()
        response = session.get(url, timeout=30)
        times.append(time.perf_counter() - began)
        body = response.json()
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000, body


def bench_list(url: str) -> None:
    session = requests.Session()
    for name, query in [
        ("first page, limit=50", "limit=50"),
        ("limit=500", "limit=500"),
        ("status=CANCELED (1%)", "status=CANCELED"),
        ("status=FAILED&status=CANCELED", "status=FAILED&status=CANCELED"),
        ("tag=rare (0.1%)", "tag=rare"),
        ("tag=shard:3&status=FAILED", "tag=shard:3&status=FAILED"),
    ]:
        p50, p99, body = timed(session, f"{url}/jobs?{query}", 100)
        print(f"  GET /jobs?{query:32s} {name:30s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(body['jobs'])} jobs)")
    cursor, began, pages = None, time.perf_counter(), 0
    while pages < 200:
        body = session.get(f"{url}/jobs?limit=500" + (f"&cursor={cursor}" if cursor else ""), timeout=30).json()
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    per_page = (time.perf_counter() - began) / pages * 1000
    print(f"  paging with cursors, limit=500: {pages} pages, {per_page:.2f} ms per page")


def bench_followers(url: str, proc: subprocess.Popen[bytes], followers: int, go: Path) -> None:
    # With --workers 1, the writer waits behind a job that ends once every follower is connected.
    blocker = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)"
    requests.post(f"{url}/jobs", json={"args": [sys.executable, "-c", blocker]}, timeout=10)
    writer = (
        "import time, sys\n"
        "for i in range(200):\n"
        "    print(f'{time.time():.4f}', file=sys.stderr, flush=True); time.sleep(0.05)"
    )
    job = requests.post(f"{url}/jobs", json={"args": [sys.executable, "-c", writer]}, timeout=10).json()
    lateness: list[float] = []
    lock = threading.Lock()
    connected = threading.Barrier(followers + 1, timeout=30)

    def follow() -> None:
        with requests.get(f"{url}/jobs/{job['id']}/logs?follow=1", stream=True, timeout=60) as response:
            connected.wait()
            for line in response.iter_lines():
                if line.startswith(b'data: "'):
                    now = time.time()
                    stamps = json.loads(line[6:]).split()
                    with lock:
                        lateness.extend(now - float(s) for s in stamps)

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(followers)]
    for thread in threads:
        thread.start()
    connected.wait()
    server = psutil.Process(proc.pid)
    cpu_before, began = server.cpu_times(), time.monotonic()
    go.touch()
    for thread in threads:
        thread.join(60)
    cpu_after, elapsed = server.cpu_times(), time.monotonic() - began
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed * 100
    lateness.sort()
    p50, p99 = statistics.median(lateness) * 1000, lateness[int(len(lateness) * 0.99)] * 1000
    print(
        f"  {followers} followers of one job writing 20 lines/s for 10 s: server CPU {cpu:.0f}% of one core, "
        f"lateness p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(lateness)} lines received)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--followers", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jobs_dir = Path(tmp) / "jobs"
        jobs_dir.mkdir()
        began = time.monotonic()
        build(jobs_dir, args.jobs)
        print(f"built {args.jobs} jobs in {time.monotonic() - began:.1f} s")
        threads = str(max(64, args.followers + 16))
        streams = str(args.followers + 8)
        proc, url, startup = start(jobs_dir, "--threads", threads, "--max-streams", streams, "--workers", "1")
        try:
            rss = psutil.Process(proc.pid).memory_info().rss / 1e6
            print(f"server ready in {startup:.1f} s with {args.jobs} jobs, RSS {rss:.0f} MB")
            bench_list(url)
            bench_followers(url, proc, args.followers, Path(tmp) / "go")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
