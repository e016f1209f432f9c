"""Zero loss under crashes: submit jobs while SIGKILLing the server and restarting it on the same
jobs directory; at the end every acknowledged job must be terminal.

    python bench/chaos.py [--jobs 2000] [--kills 10] [--threads 4] [--timeout 300]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/chaos.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.client import TERMINAL, Client, epoch
from bench.limit import true_command
from bench.report import percentile, write_chaos
from bench.server import BenchServer
from procq.actors.job import Job

# Mostly instant jobs, some that are running when a kill lands (a crash must not lose them either).
SLOW = [sys.executable, "-c", "import time; time.sleep(0.05)"]
DOWN = (ConnectionError, http.client.HTTPException, socket.timeout, OSError)


@dataclass
class Ledger:
    """What the clients saw, shared by the submitter threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    next_job: int = 0
    sent: int = 0  # POSTs sent, including those a kill cut off
    unanswered: int = 0  # POSTs with no answer (connection refused or dropped): never acknowledged
    refused: int = 0  # POSTs answered with an error (503 while stopping)
    acked: dict[str, float] = field(default_factory=dict)  # id -> time.time() the POST was sent

    def take(self, total: int) -> int | None:
        with self.lock:
            if self.next_job >= total:
                return None
            self.next_job += 1
            return self.next_job - 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def submitter(port: int, ledger: Ledger, total: int, deadline: float, rng: random.Random) -> None:
    """Submit jobs until `total` are acknowledged; a job whose POST got no 201 is sent again."""
    http = Client("127.0.0.1", port, timeout_s=10)
    job = ledger.take(total)
    while job is not None and time.monotonic() < deadline:
        args = SLOW if rng.random() < 0.2 else true_command()
        sent = time.time()
        with ledger.lock:
            ledger.sent += 1
        try:
            status, body = http.request("POST", "/jobs", {"args": args})
        except DOWN:
            http.close()
            with ledger.lock:
                ledger.unanswered += 1
            time.sleep(0.02)  # the server is down or restarting
            continue
        if status == 201:
            with ledger.lock:
                ledger.acked[json.loads(body)["id"]] = sent
            job = ledger.take(total)
        else:
            with ledger.lock:
                ledger.refused += 1
            time.sleep(0.02)
    http.close()


def start(jobs_dir: Path, port: int, workers: int) -> BenchServer:
    """Start the server on the fixed port; retry briefly if the killed one's port is not free yet."""
    for attempt in range(50):
        try:
            return BenchServer(jobs_dir, "--grace", "1", port=port, workers=workers)
        except RuntimeError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def settle(http: Client, ids: list[str], deadline: float) -> dict[str, dict]:
    """The final state of every id, polling the ones not yet terminal until the deadline."""
    final: dict[str, dict] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for job_id in pending:
            status, job = http.json("GET", f"/jobs/{job_id}/status")
            if status == 200 and job["status"] in TERMINAL:
                final[job_id] = job
            else:
                still.append(job_id)
        pending = still
        if pending:
            time.sleep(0.1)
    for job_id in pending:
        status, job = http.json("GET", f"/jobs/{job_id}/status")
        final[job_id] = job if status == 200 else {"id": job_id, "status": f"HTTP {status}"}
    return final


def check_disk(jobs_dir: Path, acked: set[str]) -> tuple[list[str], list[str]]:
    """Every meta.json parses as a job, and no job is IN_PROGRESS without its process. Returns the
    problems, and the directories a crash left without any meta.json (between mkdir and the first
    write): harmless only if their job was never acknowledged, which is checked here."""
    problems, partial = [], []
    for entry in sorted(jobs_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not (entry / "meta.json").exists() and entry.name not in acked:
            partial.append(entry.name)
            continue
        try:
            job = Job.from_dict(json.loads((entry / "meta.json").read_bytes()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"{entry.name}: meta.json does not parse ({exc})")
            continue
        if job.status.value == "IN_PROGRESS" and not _alive(job.pid, job.pid_started_at):
            problems.append(f"{job.id}: IN_PROGRESS but its process {job.pid} is gone")
    return problems, partial


def leftovers(jobs_dir: Path) -> list[str]:
    """Processes still running inside a job directory (every child runs with its job's dir as cwd)."""
    found = []
    root = str(jobs_dir.resolve())
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(root + "/") or cwd.startswith(root + "\\"):
            found.append(f"pid {proc.info['pid']} {proc.info.get('cmdline')} in {cwd}")
    return found


def _alive(pid: int | None, created: float | None) -> bool:
    try:
        proc = psutil.Process(pid or 0)
        return created is not None and abs(proc.create_time() - created) < 0.01 and proc.status() != "zombie"
    except psutil.Error:
        return False


def chaos(jobs: int, kills: int, threads: int, workers: int, timeout_s: float, seed: int, jobs_dir: Path) -> bool:
    """Run the whole harness, print its report, and return True for zero loss with every check passed."""
    rng = random.Random(seed)
    deadline = time.monotonic() + timeout_s
    port = free_port()
    ledger = Ledger()
    began = time.time()
    server = start(jobs_dir, port, workers)
    try:
        clients = [
            threading.Thread(
                target=submitter, args=(port, ledger, jobs, deadline, random.Random(seed + t)), daemon=True
            )
            for t in range(threads)
        ]
        for client in clients:
            client.start()
        # Spread the kills over the time the submissions are expected to take (~jobs/200 s here), at random moments.
        span_s = max(2.0, jobs / 200)
        for kill in range(kills):
            time.sleep(rng.uniform(0.3, 2 * span_s / kills))
            if time.monotonic() > deadline:
                break
            server.kill()
            print(f"kill {kill + 1}/{kills}: SIGKILL after {len(ledger.acked)} acknowledged", flush=True)
            server = start(jobs_dir, port, workers)
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
        with server.client() as http:
            final = settle(http, list(ledger.acked), deadline)
        problems, partial = check_disk(jobs_dir, set(ledger.acked))
        code = server.stop()
    finally:
        if server.proc.poll() is None:  # an error cut the run short: never leave a server behind
            server.kill()
    if code != 0:
        problems.append(f"the server exited with {code} on SIGTERM")
    time.sleep(0.2)
    left = leftovers(jobs_dir)
    elapsed = time.time() - began

    completed = [j for j in final.values() if j["status"] == "COMPLETED"]
    failed = [j for j in final.values() if j["status"] == "FAILED" and "interrupted" in (j.get("error") or "")]
    lost = sorted(set(final) - {j["id"] for j in completed + failed})
    latencies = [epoch(j["completed_at"]) - ledger.acked[j["id"]] for j in completed]
    print(f"jobs {jobs}, kills {kills}, client threads {threads}, workers {workers}, seed {seed}")
    print(f"submitted (POSTs sent) {ledger.sent}, unanswered {ledger.unanswered}, refused {ledger.refused}")
    print(
        f"acknowledged {len(ledger.acked)} / completed {len(completed)} / failed (interrupted) {len(failed)}"
        f" / lost {len(lost)}"
    )
    print(
        f"throughput {len(completed) / elapsed:.0f} completed jobs/s over {elapsed:.1f} s (kills and restarts included)"
    )
    if latencies:
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        print(f"submit→completed p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"meta.json checks: {'all parse, none IN_PROGRESS without a process' if not problems else problems[:20]}")
    if partial:
        print(f"job directories without meta.json (crash mid-create, never acknowledged): {len(partial)}")
    print(f"processes left: {left[:20] if left else 'none'}")
    if len(ledger.acked) < jobs:
        print(f"NOT DONE: only {len(ledger.acked)} of {jobs} jobs were acknowledged before the deadline")
    if lost:
        print(f"LOST {len(lost)}: " + ", ".join(f"{i} ({final[i]['status']})" for i in lost[:50]))
    else:
        print("ZERO LOSS")
    return not lost and not problems and not left and len(ledger.acked) == jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to get acknowledged")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the server at random moments")
    parser.add_argument("--threads", type=int, default=4, help="client threads submitting")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    parser.add_argument("--timeout", type=float, default=300, help="seconds the whole run may take")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--jobs-dir", type=Path, default=None, help="fresh directory to use (default: a temp dir)")
    parser.add_argument("--no-results", action="store_true", help="do not record the output in bench/RESULTS.md")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    temp = None if args.jobs_dir else Path(tempfile.mkdtemp(prefix="procq-chaos-"))
    jobs_dir = args.jobs_dir or temp / "jobs"
    out = io.StringIO()
    try:
        with redirect_stdout(_Tee(sys.stdout, out)):
            ok = chaos(args.jobs, args.kills, args.threads, args.workers, args.timeout, seed, jobs_dir)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    if not args.no_results:
        command = "python bench/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_chaos(out.getvalue(), command.strip(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return 0 if ok else 1


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


if __name__ == "__main__":
    sys.exit(main())
