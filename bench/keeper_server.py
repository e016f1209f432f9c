"""The server with its keeper: trivial-job throughput against the raw spawn limit of the same run,
the server's threads with 64 running jobs, and the time from a restart to N running jobs re-adopted.

    python bench/keeper_server.py [--jobs 1000] [--adopt 1000]

Prints its lines and records them in bench/RESULTS.md (between the keeper-server markers).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/keeper_server.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import throughput
from bench.limit import spawn_cost, true_command
from bench.report import RESULTS, _section
from bench.server import BenchServer

BEGIN, END = "<!-- keeper-server:begin -->", "<!-- keeper-server:end -->"
SLEEP = ["sleep", "600"]


def running(server: BenchServer, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with server.client() as http:
        while http.json("GET", "/stats")[1]["counts"]["IN_PROGRESS"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} jobs not running within {timeout_s} s")
            time.sleep(0.1)


def threads_with_running(work: Path, count: int) -> tuple[int, int, int]:
    """(threads idle, threads with `count` running jobs, Supervisor actors among them)."""
    server = BenchServer(work / "threads", port=0, workers=count)
    try:
        server.wait_ready()
        idle = server.ps.num_threads()
        with server.client() as http:
            for _ in range(count):
                http.submit(SLEEP)
        running(server, count, 120)
        time.sleep(1.0)
        busy = server.ps.num_threads()
    finally:
        server.stop()
    return idle, busy, count


def readoption(work: Path, count: int) -> tuple[float, float]:
    """(seconds to start `count` sleeps, seconds from a restart after SIGKILL to ready with all re-adopted)."""
    jobs_dir = work / "adopt"
    server = BenchServer(jobs_dir, port=0, workers=count)
    began = time.monotonic()
    try:
        server.wait_ready()
        with server.client() as http:
            for _ in range(count):
                http.submit(SLEEP)
        running(server, count, 600)
        started_s = time.monotonic() - began
    finally:
        server.kill()
    again = BenchServer(jobs_dir, port=0, workers=count, ready_timeout_s=600)
    try:
        ready_s = again.wait_ready(600)
        running(again, count, 600)  # every one still IN_PROGRESS, followed by its new Supervisor
        adopted_s = time.perf_counter() - again.started
        del ready_s
    finally:
        again.stop(timeout_s=600)  # the default stop ends every re-adopted tree through the keeper
    return started_s, adopted_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/keeper_server.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="trivial jobs for the throughput run")
    parser.add_argument("--adopt", type=int, default=1000, help="running sleep jobs to re-adopt")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="procq-kserver-"))
    lines = []
    try:
        limit, _ = spawn_cost(true_command(), args.jobs)
        for row in throughput.run(work, limit, args.jobs):
            ratio = f" ({row.ratio:.2f} × {row.ratio_of or 'the raw spawn limit'})" if row.ratio else ""
            lines.append(f"- {row.scenario}: {row.measure}: {row.value}{ratio}")
            print(lines[-1], flush=True)
        idle, busy, count = threads_with_running(work, 64)
        lines.append(f"- server threads: {idle} idle, {busy} with {count} running jobs ({busy - idle} more)")
        print(lines[-1], flush=True)
        started_s, adopted_s = readoption(work, args.adopt)
        lines.append(
            f"- re-adoption: {args.adopt} running `sleep` jobs (started in {started_s:.1f} s); after a SIGKILL of "
            f"the server, a new one serves with all {args.adopt} re-adopted {adopted_s:.1f} s after it was started"
        )
        print(lines[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_results:
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python bench/keeper_server.py " + " ".join(argv if argv is not None else sys.argv[1:])
        block = f"{BEGIN}\n## The server with its keeper\n\n- Date: {date}\n- Command: `{command.strip()}`\n\n"
        block += "\n".join(lines) + f"\n{END}"
        text = RESULTS.read_text(encoding="utf-8")
        old = _section(text, BEGIN, END)
        RESULTS.write_text(text.replace(old, block) if old else text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
