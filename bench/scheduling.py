"""Cost of deciding what runs: the Scheduler with many queued jobs, and one sample of a job's process tree.

Run: python bench/scheduling.py [--jobs 10000]. Prints microseconds per operation; nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from procq.actors.dispatch.scheduler import Scheduler  # noqa: E402
from procq.actors.job import IdGenerator, Job, timestamp, utc_now  # noqa: E402
from procq.actors.resources.node import Gpu, Node  # noqa: E402
from procq.actors.supervise.sampler import ProcessTree  # noqa: E402


def scheduler(jobs: int) -> None:
    new_id, now = IdGenerator(), utc_now()
    queued = [
        Job(
            id=new_id(),
            args=("x",),
            enqueued_at=timestamp(now + timedelta(milliseconds=i)),
            priority=random.randint(-10, 10),
            queue=random.choice(["default", "gpu", "cpu", "io"]),
        )
        for i in range(jobs)
    ]
    plan = Scheduler(8, 60.0, (("gpu", 1), ("cpu", 4)))
    started = time.perf_counter()
    for job in queued:
        plan.add(job, now.timestamp(), lambda job_id: None)
    added = time.perf_counter()
    count = 0
    while (job_id := plan.next_to_start()) is not None:
        plan.ended(job_id)
        count += 1
    done = time.perf_counter()
    print(f"scheduler, {jobs} queued jobs in 4 queues:")
    print(f"  add        {(added - started) / jobs * 1e6:8.1f} us per job (mostly parsing enqueued_at)")
    print(f"  start+end  {(done - added) / count * 1e6:8.1f} us per job (whatever the queue length)")


def gpu_scheduler(jobs: int) -> None:
    """Jobs with requires on an 8-GPU node: the reservation pass walks the waitlist (LOOKAHEAD bounds it)."""
    new_id, now = IdGenerator(), utc_now()
    node = Node(tuple(Gpu(str(i)) for i in range(8)), "nvidia", (("license", 4),))
    queued = [
        Job(
            id=new_id(),
            args=("x",),
            enqueued_at=timestamp(now + timedelta(milliseconds=i)),
            priority=random.randint(-10, 10),
            queue=random.choice(["default", "train", "infer"]),
            requires=random.choice([{"gpus": 1}, {"gpus": 2}, {"gpus": 1, "license": 1}, {"gpus": 8}]),
        )
        for i in range(jobs)
    ]
    plan = Scheduler(64, 60.0, (), node)
    for job in queued:
        plan.add(job, now.timestamp(), lambda job_id: None)
    # the node full, a 8-GPU job at the front: every pass finds nothing that may start
    holders = []
    while (job_id := plan.next_to_start()) is not None:
        holders.append(job_id)
    passes = 2000
    started = time.perf_counter()
    for _ in range(passes):
        plan.next_to_start()
    blocked = time.perf_counter() - started
    count, started = 0, time.perf_counter()
    for job_id in holders:
        plan.ended(job_id)
    while (job_id := plan.next_to_start()) is not None:
        plan.ended(job_id)
        count += 1
    done = time.perf_counter() - started
    print(f"scheduler with GPUs, {jobs} queued jobs asking for 1, 2 or 8 GPUs (and licences) on 8 GPUs:")
    print(f"  a pass that finds nothing free  {blocked / passes * 1e6:8.1f} us")
    print(f"  start+end                       {done / count * 1e6:8.1f} us per job")


def sampler(samples: int) -> None:
    sleep = "import time; time.sleep(30)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleep!r}]); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)  # let the grandchild start
        tree = ProcessTree(child.pid, psutil.Process(child.pid).create_time())
        outputs = (Path(__file__), Path(__file__))
        started = time.perf_counter()
        for _ in range(samples):
            tree.measure(outputs)
        elapsed = time.perf_counter() - started
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait()
    print(f"sampler, a tree of 2 processes, {len(psutil.pids())} processes on the machine:")
    print(f"  one sample {elapsed / samples * 1e3:8.2f} ms (psutil walks the process table to find the tree)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=200)
    options = parser.parse_args()
    scheduler(options.jobs)
    gpu_scheduler(options.jobs)
    sampler(options.samples)
