"""The fastest peer we measured, task-spooler (`tsp`), run the way the throughput scenario runs procq:
2 slots, `true` jobs submitted from 4 client threads, until the last one has finished."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time

from bench.limit import true_command


def find_tsp() -> tuple[str | None, str]:
    """The tsp executable, installed from Debian's `task-spooler` package when missing and allowed
    (root with apt-get); else None and why."""
    for name in ("tsp", "ts"):  # Debian names it tsp; the upstream name clashes with moreutils' ts
        found = shutil.which(name)
        if found and name == "tsp":
            return found, ""
    if shutil.which("apt-get") is None:
        return None, "task-spooler is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return None, "task-spooler is not installed (apt-get install task-spooler needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", "task-spooler"], capture_output=True, text=True, env=env, timeout=300
    )
    found = shutil.which("tsp")
    if found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"apt-get install task-spooler failed: {tail[0]}"
    return found, ""


def tsp_throughput(tsp: str, n: int, threads: int = 4, slots: int = 2) -> float:
    """Jobs per second from the first submit to the last job finished, with a private tsp server."""
    work = tempfile.mkdtemp(prefix="procq-bench-tsp-")
    env = {**os.environ, "TS_SOCKET": os.path.join(work, "socket"), "TMPDIR": work, "TS_MAXFINISHED": str(n + 10)}
    args = true_command()

    def run(*extra: str) -> str:
        return subprocess.run([tsp, *extra], env=env, capture_output=True, text=True, check=True).stdout

    try:
        run("-S", str(slots))  # starts its server, with the slots the procq runs get
        counts = [n // threads + (t < n % threads) for t in range(threads)]

        def submit(count: int) -> None:
            for _ in range(count):
                run(*args)

        began = time.perf_counter()
        workers = [threading.Thread(target=submit, args=(count,)) for count in counts]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        while True:  # -w on the newest id would miss one that an older, slower job still outlasts
            listing = run("-l")
            if listing.count(" finished ") >= n:
                break
            time.sleep(0.01)
        return n / (time.perf_counter() - began)
    finally:
        subprocess.run([tsp, "-K"], env=env, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
