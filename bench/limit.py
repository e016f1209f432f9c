"""Scenario 1, the limit: how fast this machine starts and reaps trivial processes, outside procq."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.report import Row
from procq.actors import osdeps

PY_PASS = [sys.executable, "-c", "pass"]


def true_command() -> list[str]:
    """`true` resolved to its real path (no shim); the interpreter doing nothing where there is none."""
    found = shutil.which("true")
    return [found] if found else PY_PASS


def spawn_rate(args: list[str], n: int, threads: int = 2) -> float:
    """Processes per second: `threads` threads each start and reap n/threads processes one after the
    other, stdout and stderr going to a fresh file per process, with procq's own spawn flags."""
    return spawn_cost(args, n, threads)[0]


def spawn_cost(args: list[str], n: int, threads: int = 2) -> tuple[float, float]:
    """(processes per second, CPU seconds the parent spent per process) for spawn_rate's loop. The CPU
    cost barely moves when other work shares the machine, so it is the steadier yardstick."""
    me = psutil.Process()
    cpu = me.cpu_times()
    with tempfile.TemporaryDirectory(prefix="procq-limit-") as tmp:
        root = Path(tmp)
        per_thread = n // threads

        def work(t: int) -> None:
            for i in range(per_thread):
                with open(root / f"{t}-{i}.out", "wb") as out, open(root / f"{t}-{i}.err", "wb") as err:
                    child = subprocess.Popen(
                        args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, **osdeps.spawn_kwargs()
                    )
                child.wait()

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        after = me.cpu_times()
        spent = after.user + after.system - cpu.user - cpu.system
        return per_thread * threads / elapsed, spent / (per_thread * threads)


def run(n: int, n_python: int) -> tuple[float, float, list[Row]]:
    """Returns the `true` rate (every throughput is compared with it), the parent's CPU per spawn,
    and the rows."""
    rate_true, cpu_true = spawn_cost(true_command(), n)
    rate_py = spawn_rate(PY_PASS, n_python)
    rows = [
        Row("1 limit", f"Popen+wait `{Path(true_command()[0]).name}`, 2 threads, N={n}", f"{rate_true:.0f} /s"),
        Row(
            "1 limit",
            f"Popen+wait `python -c pass`, 2 threads, N={n_python}",
            f"{rate_py:.0f} /s",
            rate_py / rate_true,
            "limit",
        ),
        Row("1 limit", "parent CPU per `true` start+reap", f"{cpu_true * 1e6:.0f} µs"),
    ]
    return rate_true, cpu_true, rows
