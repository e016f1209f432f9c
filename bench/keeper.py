"""The keeper's cost: trivial jobs through the keeper against the raw spawn limit of the same run.

`python bench/keeper.py [--jobs N]` prints its rows and records them in bench/RESULTS.md (between the
keeper markers). Both sides keep 2 jobs in flight, as `--workers 2` would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/keeper.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.limit import spawn_cost, true_command
from bench.report import RESULTS, _section
from procq.actors.keeper import protocol
from procq.actors.keeper.client import KeeperClient

BEGIN, END = "<!-- keeper:begin -->", "<!-- keeper:end -->"


def through_keeper(jobs_dir: Path, args: list[str], n: int, in_flight: int = 2) -> tuple[float, float, float]:
    """(jobs per second, keeper CPU s per job, client CPU s per job) for n jobs, `in_flight` at a time,
    each ending when its exit record has been announced."""
    client = KeeperClient.ensure(jobs_dir)
    slots = threading.Semaphore(in_flight)
    done = threading.Event()
    ended = [0]

    def on_exit(record: dict) -> None:
        ended[0] += 1
        slots.release()
        if ended[0] == n:
            done.set()

    client.follow(on_exit, lambda: None)
    ids = [f"{i + 1:032x}" for i in range(n)]
    for job_id in ids:
        (jobs_dir / job_id).mkdir()
    env = dict(os.environ)
    keeper, me = psutil.Process(client.pid), psutil.Process()
    keeper_cpu, my_cpu = sum(keeper.cpu_times()[:2]), sum(me.cpu_times()[:2])
    started = time.perf_counter()
    for job_id in ids:
        slots.acquire()
        client.spawn(job_id, 1, args, env)
    if not done.wait(120):
        raise RuntimeError(f"only {ended[0]} of {n} runs ended")
    elapsed = time.perf_counter() - started
    keeper_used = sum(keeper.cpu_times()[:2]) - keeper_cpu
    my_used = sum(me.cpu_times()[:2]) - my_cpu
    client.drain()
    client.close()
    keeper.wait(10)
    return n / elapsed, keeper_used / n, my_used / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/keeper.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--no-results", action="store_true")
    options = parser.parse_args(argv)
    args, n = true_command(), options.jobs
    limit, limit_cpu = spawn_cost(args, n)
    with tempfile.TemporaryDirectory(prefix="procq-keeper-") as tmp:
        jobs_dir = Path(tmp) / "jobs"
        jobs_dir.mkdir()
        rate, keeper_cpu, client_cpu = through_keeper(jobs_dir, args, n)
        assert not (jobs_dir / protocol.INFO).exists()
    rows = [
        f"| raw spawn limit: Popen+wait `true`, 2 threads, N={n} | {limit:.0f} /s | | {limit_cpu * 1e6:.0f} µs |",
        f"| through the keeper: spawn → exit record → notification, 2 in flight, N={n} | {rate:.0f} /s "
        f"| {rate / limit:.2f} × limit | keeper {keeper_cpu * 1e6:.0f} µs + client {client_cpu * 1e6:.0f} µs |",
    ]
    table = "| measure | rate | ratio | CPU per job |\n|---|---|---|---|\n" + "\n".join(rows)
    print(table)
    if not options.no_results:
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python bench/keeper.py " + " ".join(argv if argv is not None else sys.argv[1:])
        block = f"{BEGIN}\n## The keeper's cost\n\n- Date: {date}\n- Command: `{command.strip()}`\n\n{table}\n"
        block += (
            "\n- Each run through the keeper costs a request over its channel, the spawn, the reap (wait4), an "
            "fsynced exit record (tmp + rename + directory fsync) and a notification; the raw limit does only "
            "Popen+wait.\n"
        )
        block += END
        text = RESULTS.read_text(encoding="utf-8")
        old = _section(text, BEGIN, END)
        RESULTS.write_text(text.replace(old, block) if old else text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
