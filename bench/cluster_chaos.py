"""Cluster chaos: N nodes on one PostgreSQL schema take M jobs, submitted in batches through random
nodes, while whole nodes (server, keeper and job processes) are SIGKILLed at random moments and
restarted later with the same --node-name and jobs directory.

Each job is deterministic from its number i: its duration (mostly none, some up to 1.5 s), its exit
code, its stdout and its max_attempts. Each run appends "<attempt> <pid> <node> start|end|term
<monotonic time>" to runs/<job id> (the attempt from the PROCQ_RUN marker). At the end:

- zero loss: every acknowledged job is terminal (and every job in the database, such as those of a batch
  whose 201 a kill cut off);
- its exit code is the one it really had, or it FAILED with the reason (no attempt left after a node loss);
- a COMPLETED job's result is byte-exact through a random node (served from the database copy);
- no job ran twice at once: the runs of a job never overlap in time (a run with no end line died with
  its node: it ended by that node's kill);
- runs recorded == attempts: no attempt ran twice, none ran uncounted; an attempt counted but never
  started is allowed only when its node was killed between the claim's commit and the spawn;
- no orphans: no job process and no keeper left once the nodes stopped; every meta.json parses.

    python bench/cluster_chaos.py [--nodes 3] [--jobs 2000] [--kills 6] [--seed 1] [--timeout 600]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/cluster_chaos.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
import psycopg

from bench.chaos import DOWN, _Tee
from bench.client import TERMINAL, Client
from bench.cluster_nodes import drop, fresh_schema
from bench.report import write_chaos
from bench.server import BenchServer
from procq.actors.job import Job
from procq.actors.keeper import protocol
from tests.helpers import end_keeper

JOB = """import os, signal, sys, time
i, runs = int(sys.argv[1]), sys.argv[2]
job, attempt = os.environ['PROCQ_RUN'].split('.')
node = os.path.basename(os.path.dirname(os.getcwd()))
def note(what):
    with open(os.path.join(runs, job), 'a') as f:
        f.write(f'{attempt} {os.getpid()} {node} {what} {time.monotonic():.6f}\\n')
def term(*_):
    note('term')
    os._exit(143)
signal.signal(signal.SIGTERM, term)
note('start')
sys.stdout.write(f'job {i} line\\n' * (1 + i % 3))
sys.stdout.flush()
time.sleep(float(sys.argv[3]))
note('end')
sys.exit(int(sys.argv[4]))
"""


def shape(i: int, slow: int = 15) -> tuple[float, int, int]:
    """Job i's duration, exit code and max_attempts: `slow` % take 0.1-1.5 s, the rest none; 1 in 10 exits 3
    (one attempt), 1 in 20 exits 2 (three attempts, so it runs three times); half may run again after a
    node loss (three attempts), half fail with the reason (one)."""
    duration = 0.0 if (i * 7919) % 100 >= slow else ((i * 31) % 15 + 1) / 10
    code = 3 if i % 10 == 7 else 2 if i % 20 == 4 else 0
    return duration, code, 1 if i % 2 else 3


def expected_stdout(i: int) -> bytes:
    return f"job {i} line\n".encode() * (1 + i % 3)


def spec(i: int, runs: Path, slow: int) -> dict:
    duration, code, attempts = shape(i, slow)
    args = [sys.executable, "-S", "-c", JOB, str(i), str(runs), str(duration), str(code)]
    return {"args": args, "max_attempts": attempts, "retry_backoff_seconds": 0.1}


@dataclass
class Cluster:
    """The nodes, alive or not, shared by the submitter thread and the killer (main) thread."""

    root: Path
    workers: int
    lease: float
    log_level: str = "WARNING"
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: dict[str, BenchServer] = field(default_factory=dict)
    kills: dict[str, list[float]] = field(default_factory=dict)  # node -> monotonic times it was killed

    def start(self, name: str) -> None:
        """Start node `name` on its jobs directory (PROCQ_DATABASE_URL is in this process's environment);
        on a loaded machine a start may take long: one that does not come up is tried again."""
        flags = ("--node-name", name, "--lease", str(self.lease), "--grace", "1", "--log-level", self.log_level)
        for attempt in range(3):
            try:
                node = BenchServer(self.root / name, *flags, workers=self.workers, ready_timeout_s=60)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        with self.lock:
            self.live[name] = node

    def alive(self) -> list[tuple[str, BenchServer]]:
        with self.lock:
            return sorted(self.live.items())

    def kill(self, name: str) -> None:
        """The machine is gone: its server, its keeper, and every process of its jobs (SIGKILL)."""
        with self.lock:
            node = self.live.pop(name)
        node.proc.kill()
        node.wait(10)
        try:
            os.kill(json.loads((node.jobs_dir / protocol.INFO).read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
        for _ in range(3):  # a spawn the keeper had begun may show up a moment later
            for proc in job_processes(node.jobs_dir):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            time.sleep(0.1)
        self.kills.setdefault(name, []).append(time.monotonic())


def job_processes(jobs_dir: Path) -> list[psutil.Process]:
    """Processes running in a job directory of `jobs_dir` (every job runs with its directory as cwd)."""
    root = str(jobs_dir.resolve()) + os.sep
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if (proc.info.get("cwd") or "").startswith(root):
            found.append(proc)
    return found


def submit_all(
    cluster: Cluster, total: int, runs: Path, slow: int, batch: int, acked: dict[str, int], rng: random.Random
) -> None:
    """Submit jobs 0..total-1 in batches through random live nodes; a batch with no 201 is sent again
    (a batch cut off by a kill may have been created: its jobs then exist unacknowledged)."""
    i = 0
    while i < total:
        live = cluster.alive()
        if not live:
            time.sleep(0.05)
            continue
        _, node = rng.choice(live)
        count = min(batch, total - i)
        host, port = node.url.removeprefix("http://").split(":")
        http = Client(host, int(port), timeout_s=15)
        try:
            status, body = http.request(
                "POST", "/jobs/batch", {"jobs": [spec(i + k, runs, slow) for k in range(count)]}
            )
        except DOWN:
            time.sleep(0.05)
            continue
        finally:
            http.close()
        if status == 201:
            for k, job in enumerate(json.loads(body)["jobs"]):
                acked[job["id"]] = i + k
            i += count
        else:
            time.sleep(0.05)


def ask(cluster: Cluster, rng: random.Random, path: str) -> tuple[int, bytes]:
    """GET `path` from a random live node, trying the others if one does not answer."""
    for _ in range(20):
        live = cluster.alive()
        if live:
            _, node = rng.choice(live)
            host, port = node.url.removeprefix("http://").split(":")
            try:
                with Client(host, int(port), timeout_s=15) as http:
                    return http.request("GET", path)
            except DOWN:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"no node answered GET {path}")


def settle(cluster: Cluster, ids: list[str], rng: random.Random, deadline: float) -> dict[str, dict]:
    final: dict[str, dict] = {}
    pending = list(ids)
    while pending:
        still = []
        for job_id in pending:
            status, body = ask(cluster, rng, f"/jobs/{job_id}/status")
            job = json.loads(body) if status == 200 else {"id": job_id, "status": f"HTTP {status}"}
            if job["status"] in TERMINAL or time.monotonic() > deadline:
                final[job_id] = job
            else:
                still.append(job_id)
        pending = still
        if pending:
            time.sleep(0.5)
    return final


@dataclass(frozen=True)
class Run:
    attempt: int
    node: str
    start: float
    end: float | None  # None: no end line (SIGKILLed with its node)


def read_runs(path: Path) -> list[Run]:
    starts: dict[tuple[int, int], tuple[str, float]] = {}
    ends: dict[tuple[int, int], float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        attempt, pid, node, what, at = line.split()
        key = (int(attempt), int(pid))
        if what == "start":
            starts[key] = (node, float(at))
        else:
            ends[key] = float(at)
    runs = [Run(key[0], node, at, ends.get(key)) for key, (node, at) in starts.items()]
    return sorted(runs, key=lambda run: run.start)


def check_job(job: dict, i: int, runs: list[Run], kills: dict[str, list[float]], result: bytes | None) -> list[str]:
    """What is wrong with one acknowledged job."""
    problems = []
    _, code, _ = shape(i)
    name = job["id"]
    if job["status"] not in TERMINAL:
        return [f"{name}: {job['status']}, not terminal"]
    if job.get("exit_code") is None:
        if job["status"] != "FAILED" or not job.get("error"):
            problems.append(f"{name}: {job['status']} with no exit code and no reason")
    elif job["exit_code"] != code or (job["status"] == "COMPLETED") != (code == 0):
        problems.append(f"{name}: {job['status']} exit {job['exit_code']}, expected {code}")
    if job["status"] == "COMPLETED" and result != expected_stdout(i):
        problems.append(f"{name}: result not byte-exact: {result[:80] if result else result!r}")
    attempts = [run.attempt for run in runs]
    if len(set(attempts)) != len(attempts):
        problems.append(f"{name}: an attempt ran twice: {sorted(attempts)}")
    if any(a > job["attempts"] for a in attempts):
        problems.append(f"{name}: ran attempt {max(attempts)} but attempts is {job['attempts']}")
    if job.get("exit_code") is not None and job["attempts"] not in attempts:
        problems.append(f"{name}: exit code of attempt {job['attempts']}, which never ran (runs {sorted(attempts)})")
    for before, after in zip(runs, runs[1:], strict=False):
        end = before.end
        if end is None:  # killed with its node: it ended by that node's first kill after it started
            end = next((at for at in kills.get(before.node, []) if at > before.start), None)
        if end is None:
            problems.append(f"{name}: attempt {before.attempt} on {before.node} has no end and its node was not killed")
        elif end > after.start:
            problems.append(f"{name}: attempts {before.attempt} and {after.attempt} ran at once")
    return problems


def check_disk(roots: list[Path]) -> tuple[list[str], int]:
    """Every meta.json of a job directory parses as a job; returns the problems and the number of
    meta.json files. Staging directories (.new-<id>: a kill between the writer's staging and its rename)
    are not job directories: a node sweeps them at start once they are a minute old."""
    problems, count = [], 0
    for root in roots:
        for meta in root.glob("*/meta.json"):
            if meta.parent.name.startswith("."):
                continue
            count += 1
            try:
                Job.from_dict(json.loads(meta.read_bytes()))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                problems.append(f"{meta}: does not parse ({exc})")
    return problems, count


def stop_all(cluster: Cluster, root: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Stop the live nodes (SIGTERM); then nothing of theirs may be left: keepers exit once their runs
    are over, and no job process runs on. Returns the problems and the nodes whose keeper stayed
    (both are cleaned up here, so a failed run leaves nothing behind)."""
    problems, keepers_left = [], []
    for name, node in cluster.alive():
        code = node.stop()
        if code != 0:
            problems.append(f"{name} exited with {code} on SIGTERM")
    for name in names:
        try:
            keeper = psutil.Process(json.loads((root / name / protocol.INFO).read_text())["pid"])
            keeper.wait(10)
        except (OSError, ValueError, KeyError, psutil.NoSuchProcess):
            pass
        except psutil.TimeoutExpired:
            keepers_left.append(name)
            end_keeper(root / name)
        for proc in job_processes(root / name):
            problems.append(f"orphan on {name}: pid {proc.pid} {proc.cmdline()[-4:]}")
            proc.kill()
    return problems, keepers_left


def cluster_chaos(args: argparse.Namespace, root: Path) -> bool:
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.timeout
    runs = root / "runs"
    runs.mkdir(parents=True)
    schema, url = fresh_schema()
    os.environ["PROCQ_DATABASE_URL"] = url  # every node started from here joins this schema
    cluster = Cluster(root, args.workers, args.lease, args.log_level)
    names = [f"n{k + 1}" for k in range(args.nodes)]
    acked: dict[str, int] = {}
    began = time.monotonic()
    problems: list[str] = []
    try:
        for name in names:
            cluster.start(name)
        submitter = threading.Thread(
            target=submit_all,
            args=(cluster, args.jobs, runs, args.slow, args.batch, acked, random.Random(args.seed + 1)),
            daemon=True,
        )
        submitter.start()
        # Kills spread over the time the jobs are expected to take; each killed node comes back after
        # 0.5 s to twice the lease (before or after the other nodes swept its runs).
        span_s = max(5.0, args.jobs / args.rate)
        restarts: list[tuple[float, str]] = []
        kills_done = 0
        next_kill = time.monotonic() + rng.uniform(1.0, 2 * span_s / max(1, args.kills))
        while (kills_done < args.kills or restarts) and time.monotonic() < deadline:
            now = time.monotonic()
            for due, name in [r for r in restarts if r[0] <= now]:
                restarts.remove((due, name))
                cluster.start(name)
                print(f"{now - began:6.1f} s: {name} restarted", flush=True)
            live = cluster.alive()
            if kills_done < args.kills and now >= next_kill and len(live) > 1:
                name, _ = rng.choice(live)
                cluster.kill(name)
                kills_done += 1
                restarts.append((time.monotonic() + rng.uniform(0.5, 2 * args.lease), name))
                print(
                    f"{now - began:6.1f} s: kill {kills_done}/{args.kills}: {name} (server, keeper, jobs)", flush=True
                )
                next_kill = time.monotonic() + rng.uniform(0.5, 2 * span_s / max(1, args.kills))
            time.sleep(0.05)
        submitter.join(max(1.0, deadline - time.monotonic()))
        final = settle(cluster, list(acked), rng, deadline)
        checked_rng = random.Random(args.seed + 2)
        missing_starts = 0
        for job_id, i in acked.items():
            job = final[job_id]
            result = None
            if job["status"] == "COMPLETED":
                status, result = ask(cluster, checked_rng, f"/jobs/{job_id}/result")
                result = result if status == 200 else f"HTTP {status}".encode()
            job_runs = read_runs(runs / job_id)
            problems += check_job(job, i, job_runs, cluster.kills, result)
            short = job.get("attempts", 0) - len(job_runs)
            if short > 0:
                missing_starts += short
        bound = kills_done * args.workers  # a killed node held at most --workers claimed runs
        with psycopg.connect(url, autocommit=True) as conn:  # jobs of a batch whose 201 a kill cut off too
            rows = conn.execute("SELECT id, status, node, lease, body->>'attempts' FROM jobs").fetchall()
        unacked = [row[0] for row in rows if row[0] not in acked]
        problems += [
            f"{job_id}: {status} in the database on node {node} under lease {lease}, attempts {attempts}"
            for job_id, status, node, lease, attempts in rows
            if status not in TERMINAL
        ]
        if missing_starts > bound:
            problems.append(f"{missing_starts} attempts counted but never started: more than {bound}")
        elapsed = time.monotonic() - began
    finally:
        stop_problems, keepers_left = stop_all(cluster, root, names)
        drop(schema)
    problems += stop_problems
    disk, metas = check_disk([root / name for name in names])
    problems += disk
    counts: dict[str, int] = {}
    for job in final.values():
        key = job["status"] if job.get("exit_code") is not None else f"{job['status']} (no exit code: reason)"
        counts[key] = counts.get(key, 0) + 1
    reran = sum(1 for job in final.values() if job.get("interrupted"))
    all_runs = sum(len(read_runs(runs / job_id)) for job_id in acked)
    print(
        f"nodes {args.nodes} (--workers {args.workers}, --lease {args.lease:g}), jobs {args.jobs}, "
        f"node kills {kills_done}, seed {args.seed}"
    )
    print(f"acknowledged {len(acked)}; final: {dict(sorted(counts.items()))}")
    print(f"jobs in the database {len(rows)}: also {len(unacked)} of batches whose answer a kill cut off")
    print(f"runs recorded {all_runs}; jobs interrupted by a node loss {reran}")
    print(f"attempts counted but never started {missing_starts} (at most --workers per kill: {bound})")
    print(f"meta.json files {metas}; keepers left after the stop: {keepers_left or 'none'}")
    print(f"elapsed {elapsed:.1f} s ({len(acked) / elapsed:.0f} jobs/s, kills and restarts included)")
    print(f"checks: {'all passed' if not problems else problems[:20]}")
    if len(problems) > 20:
        print(f"... and {len(problems) - 20} more problems")
    ok = not problems and not keepers_left and len(acked) == args.jobs
    print("ALL RIGHT" if ok else "PROBLEMS")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/cluster_chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of a whole node at random moments")
    parser.add_argument("--workers", type=int, default=4, help="each node's --workers")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--slow", type=int, default=15, help="percent of jobs that take 0.1-1.5 s (the rest: none)")
    parser.add_argument("--batch", type=int, default=50, help="jobs per POST /jobs/batch")
    parser.add_argument("--rate", type=float, default=25.0, help="expected jobs/s, to spread the kills")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--log-level", default="WARNING", help="the nodes' --log-level (their logs are beside --dir's nodes)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="fresh directory for the nodes (default: temp)")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    args.seed = args.seed if args.seed is not None else int(time.time())
    temp = None if args.dir else Path(tempfile.mkdtemp(prefix="procq-cchaos-"))
    root = args.dir or temp
    out = io.StringIO()
    try:
        with redirect_stdout(_Tee(sys.stdout, out)):
            ok = cluster_chaos(args, root)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    if not args.no_results:
        command = "python bench/cluster_chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        marks = ("<!-- cluster-chaos:begin -->", "<!-- cluster-chaos:end -->")
        write_chaos(out.getvalue(), command.strip(), date, title="Cluster chaos: whole nodes killed", marks=marks)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
