"""Jobs outlive crashes: jobs of 0-3 s with known exit codes and output, while the server is SIGKILLed
(and, every third time, its keeper too) and restarted on the same jobs directory.

At the end every acknowledged job must be terminal; its exit code the one it really had, or FAILED
with the reason and no exit code (its keeper was lost); its stdout/stderr byte-exact; the number of
runs it made (each run appends its pid to runs.txt) equal to its `attempts`; no process left; every
meta.json whole.

    python bench/keeper_chaos.py [--jobs 300] [--kills 6] [--timeout 300]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/keeper_chaos.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.chaos import DOWN, _Tee, check_disk, free_port, leftovers, settle, start
from bench.client import Client
from bench.report import write_chaos
from procq.actors.keeper import protocol

JOB = (
    "import os, sys, time\n"
    "i = int(sys.argv[1])\n"
    "with open('runs.txt', 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
    "for n in range(3):\n"
    "    print(f'{i} out {n}', flush=True)\n"
    "    print(f'{i} err {n}', file=sys.stderr, flush=True)\n"
    "time.sleep((i * 7 % 31) / 10)\n"
    "sys.exit(i % 4)\n"
)


def expected(i: int) -> tuple[int, bytes, bytes]:
    out = "".join(f"{i} out {n}\n" for n in range(3)).encode()
    err = "".join(f"{i} err {n}\n" for n in range(3)).encode()
    return i % 4, out, err


def submit_all(port: int, total: int, acked: dict[str, int], deadline: float) -> None:
    http = Client("127.0.0.1", port, timeout_s=10)
    i = 0
    while i < total and time.monotonic() < deadline:
        try:
            status, body = http.request("POST", "/jobs", {"args": [sys.executable, "-c", JOB, str(i)]})
        except DOWN:
            http.close()
            time.sleep(0.05)
            continue
        if status == 201:
            acked[json.loads(body)["id"]] = i
            i += 1
        else:
            time.sleep(0.05)
    http.close()


def kill_keeper(jobs_dir: Path) -> bool:
    try:
        proc = psutil.Process(json.loads((jobs_dir / protocol.INFO).read_text())["pid"])
        proc.kill()
        proc.wait(10)
        return True
    except (OSError, ValueError, psutil.Error):
        return False


def check_jobs(jobs_dir: Path, final: dict[str, dict], acked: dict[str, int]) -> tuple[list[str], int]:
    """Problems, and how many attempts were counted with no first line run: a keeper killed after its
    spawn intent (the process may have started, or been ended by the next server before the job's first
    line ran: nobody can tell). Such an attempt counts, on the safe side; never the other way round."""
    problems, cut_short = [], 0
    for job_id, i in acked.items():
        job = final[job_id]
        code, out, err = expected(i)
        folder = jobs_dir / job_id
        if job["status"] not in ("COMPLETED", "FAILED", "CANCELED"):
            problems.append(f"{job_id}: {job['status']}, not terminal")
            continue
        if job.get("exit_code") is None:
            if job["status"] != "FAILED" or not job.get("error"):
                problems.append(f"{job_id}: {job['status']} with no exit code and no reason")
        else:
            if job["exit_code"] != code or (job["status"] == "COMPLETED") != (code == 0):
                problems.append(f"{job_id}: {job['status']} exit {job['exit_code']}, expected {code}")
            if (folder / "stdout.txt").read_bytes() != out or (folder / "stderr.txt").read_bytes() != err:
                problems.append(f"{job_id}: output not byte-exact")
        runs = (folder / "runs.txt").read_text().split() if (folder / "runs.txt").exists() else []
        keeper_lost = "keeper" in (job.get("interrupted") or "")
        if keeper_lost and len(runs) == job["attempts"] - 1:
            cut_short += 1
        elif len(runs) != job["attempts"]:
            problems.append(f"{job_id}: {len(runs)} runs but attempts {job['attempts']} ({job.get('interrupted')})")
    return problems, cut_short


def keeper_chaos(jobs: int, kills: int, workers: int, timeout_s: float, seed: int, jobs_dir: Path) -> bool:
    rng = random.Random(seed)
    deadline = time.monotonic() + timeout_s
    port = free_port()
    acked: dict[str, int] = {}
    began = time.time()
    server = start(jobs_dir, port, workers)
    keeper_kills = 0
    try:
        submitter = threading.Thread(target=submit_all, args=(port, jobs, acked, deadline), daemon=True)
        submitter.start()
        span_s = max(3.0, jobs * 1.5 / workers / max(1, kills))  # jobs take 1.5 s on average
        for kill in range(kills):
            time.sleep(rng.uniform(0.5, span_s))
            if time.monotonic() > deadline:
                break
            server.kill()
            also = kill % 3 == 2 and kill_keeper(jobs_dir)
            keeper_kills += also
            print(f"kill {kill + 1}/{kills}: SIGKILL of the server{' and its keeper' if also else ''}", flush=True)
            server = start(jobs_dir, port, workers)
        submitter.join(max(0.0, deadline - time.monotonic()))
        with server.client() as http:
            final = settle(http, list(acked), deadline)
        problems, _ = check_disk(jobs_dir, set(acked))
        found, cut_short = check_jobs(jobs_dir, final, acked)
        problems += found
        code = server.stop()
    finally:
        if server.proc.poll() is None:
            server.kill()
    if code != 0:
        problems.append(f"the server exited with {code} on SIGTERM")
    time.sleep(0.5)
    left = leftovers(jobs_dir)
    counts: dict[str, int] = {}
    for job in final.values():
        key = job["status"] if job.get("exit_code") is not None else f"{job['status']} (no exit code: reason)"
        counts[key] = counts.get(key, 0) + 1
    reran = sum(1 for job in final.values() if job["attempts"] > 1)
    print(f"jobs {jobs} (0-3 s, exit i % 4), server kills {kills}, of them with the keeper {keeper_kills}, seed {seed}")
    print(f"acknowledged {len(acked)}; final: {counts}; run more than once (keeper lost): {reran}")
    print(f"attempts counted with no first line run (keeper killed after the spawn intent): {cut_short}")
    if cut_short > keeper_kills * workers:
        problems.append(f"{cut_short} attempts counted with no run: more than the keeper kills could cut short")
    print(f"elapsed {time.time() - began:.1f} s")
    print(f"checks: {'all passed' if not problems else problems[:20]}")
    print(f"processes left: {left[:20] if left else 'none'}")
    ok = not problems and not left and len(acked) == jobs
    print("ALL RIGHT" if ok else "PROBLEMS")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/keeper_chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of the server; every third kills the keeper too")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--jobs-dir", type=Path, default=None)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    temp = None if args.jobs_dir else Path(tempfile.mkdtemp(prefix="procq-kchaos-"))
    jobs_dir = args.jobs_dir or temp / "jobs"
    out = io.StringIO()
    try:
        with redirect_stdout(_Tee(sys.stdout, out)):
            ok = keeper_chaos(args.jobs, args.kills, args.workers, args.timeout, seed, jobs_dir)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    if not args.no_results:
        command = "python bench/keeper_chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        title = "Chaos with the keeper: jobs outlive server and keeper kills"
        marks = ("<!-- keeper-chaos:begin -->", "<!-- keeper-chaos:end -->")
        write_chaos(out.getvalue(), command.strip(), date, title=title, marks=marks)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
