"""Limits a Supervisor enforces on a whole process tree, resource usage, and retries (real processes)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pykka
import pytest

from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.job import Job, JobRequest, Status, parse_timestamp
from procq.actors.settings import Settings
from tests.helpers import pid_alive, py, wait_until

ASK = 10


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return dataclasses.replace(settings, sample_interval_s=0.05)


def _start(settings: Settings) -> pykka.ActorProxy:
    return Dispatcher.start(settings).proxy()


def _submit(dispatcher: pykka.ActorProxy, args: list[str], **fields: object) -> str:
    return dispatcher.submit(JobRequest(args=tuple(args), **fields)).get(timeout=ASK).id


def _wait_status(dispatcher: pykka.ActorProxy, job_id: str, *statuses: Status, timeout: float = 20):
    return wait_until(lambda: (job := dispatcher.get(job_id).get(timeout=ASK)).status in statuses and job, timeout)


@pytest.fixture
def pid_file(fast: Settings) -> Iterator[Path]:
    """Where a job records its grandchild's pid; a failed test still ends that grandchild (and so
    the job's child, which waits for it)."""
    path = fast.jobs_dir.parent / "grandchild"
    yield path
    if path.exists():
        with contextlib.suppress(psutil.Error, ValueError):
            psutil.Process(int(path.read_text())).kill()


def _tree(pid_file: Path, grandchild_code: str) -> list[str]:
    """A job whose child starts a grandchild running `grandchild_code`, records its pid, and waits for it."""
    parent = (
        "import subprocess, sys, time\n"
        f"g = subprocess.Popen([sys.executable, '-c', {grandchild_code!r}])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "g.wait()\n"
    )
    return py(parent)


def _grandchild_pid(pid_file: Path) -> int:
    return int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10))


def test_a_timeout_ends_the_whole_tree_and_fails_the_job_saying_so(fast: Settings, pid_file: Path) -> None:
    dispatcher = _start(dataclasses.replace(fast, default_timeout_s=0.7))
    job_id = _submit(dispatcher, _tree(pid_file, "import time; time.sleep(60)"))
    grandchild = _grandchild_pid(pid_file)
    job = _wait_status(dispatcher, job_id, Status.FAILED)
    assert job.timeout_seconds == 0.7  # the server default, written into the job
    assert job.error.startswith("timed out: still running after timeout_seconds 0.7")
    assert not pid_alive(grandchild) and not pid_alive(job.pid)
    assert 0.7 <= job.resources["wall_seconds"] < 5


def test_a_tree_over_its_memory_limit_is_ended_and_fails_with_the_reason(fast: Settings, pid_file: Path) -> None:
    dispatcher = _start(fast)
    hog = "import time; block = b'x' * 300_000_000; time.sleep(60)"  # the grandchild holds 300 MB
    job_id = _submit(dispatcher, _tree(pid_file, hog), max_memory_bytes=150_000_000)
    grandchild = _grandchild_pid(pid_file)
    job = _wait_status(dispatcher, job_id, Status.FAILED)
    assert job.error.startswith("memory limit exceeded: the process tree used ")
    assert "max_memory_bytes 150000000" in job.error
    assert job.resources["peak_rss_bytes"] > 150_000_000
    assert not pid_alive(grandchild)


def test_output_past_its_limit_ends_the_tree_and_the_files_are_kept_cut_to_the_limit(
    fast: Settings, pid_file: Path
) -> None:
    dispatcher = _start(fast)
    writer = "import sys, time\nwhile True:\n    sys.stdout.write('x' * 10000); sys.stdout.flush(); time.sleep(0.005)"
    job_id = _submit(dispatcher, _tree(pid_file, writer), max_output_bytes=300_000)
    grandchild = _grandchild_pid(pid_file)
    job = _wait_status(dispatcher, job_id, Status.FAILED)
    assert job.error.startswith("output limit exceeded: stdout and stderr reached ")
    assert not pid_alive(grandchild)
    jobdir = fast.jobs_dir / job_id
    sizes = (jobdir / "stdout.txt").stat().st_size + (jobdir / "stderr.txt").stat().st_size
    assert sizes == 300_000 and (jobdir / "stdout.txt").read_bytes() == b"x" * 300_000


def test_each_run_records_wall_time_cpu_of_the_tree_and_peak_memory(fast: Settings) -> None:
    dispatcher = _start(fast)
    worker = "x = 0\nfor i in range(4_000_000): x += i"  # CPU spent in a grandchild the child waits for
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {worker!r}], check=True)\n"
        "block = b'x' * 80_000_000; time.sleep(0.5)\n"
    )
    job = _wait_status(dispatcher, _submit(dispatcher, py(code)), Status.COMPLETED)
    usage = job.resources
    assert usage["cpu_user_seconds"] > 0.1 and usage["cpu_system_seconds"] >= 0
    assert usage["peak_rss_bytes"] > 80_000_000
    assert usage["wall_seconds"] >= 0.5
    assert len(job.runs) == 1 and job.runs[0].attempt == 1 and job.runs[0].peak_rss_bytes == usage["peak_rss_bytes"]


def test_a_run_too_short_to_be_sampled_still_shows_its_cpu_and_peak_memory(settings: Settings) -> None:
    dispatcher = _start(dataclasses.replace(settings, sample_interval_s=60.0))  # one sample at most, at start
    job = _wait_status(dispatcher, _submit(dispatcher, py("block = b'x' * 30_000_000")), Status.COMPLETED)
    assert job.resources["peak_rss_bytes"] > 30_000_000  # reported by the OS when the child is reaped
    assert job.resources["cpu_user_seconds"] + job.resources["cpu_system_seconds"] > 0


def test_a_failing_job_is_retried_with_backoff_and_every_attempts_output_is_kept(fast: Settings) -> None:
    dispatcher = _start(fast)
    counter = fast.jobs_dir.parent / "count"
    code = (
        "import os, sys\n"
        f"n = len(open({str(counter)!r}).read()) + 1 if os.path.exists({str(counter)!r}) else 1\n"
        f"open({str(counter)!r}, 'a').write('x')\n"
        "print(f'attempt {n}'); sys.stderr.write(f'log {n}')\n"
        "sys.exit(0 if n == 3 else n)\n"
    )
    job_id = _submit(dispatcher, py(code), max_attempts=3, retry_backoff_seconds=0.3)
    job = _wait_status(dispatcher, job_id, Status.COMPLETED)
    assert job.attempts == 3 and job.exit_code == 0 and job.error is None
    assert [(run.attempt, run.exit_code) for run in job.runs] == [(1, 1), (2, 2), (3, 0)]
    assert job.runs[0].error == "the command exited with code 1"
    gaps = [
        (parse_timestamp(later.started_at) - parse_timestamp(earlier.completed_at)).total_seconds()
        for earlier, later in zip(job.runs, job.runs[1:], strict=False)
    ]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3  # 0.3 * 2**(n-1), times a jitter of 0.5..1
    jobdir = fast.jobs_dir / job_id
    assert (jobdir / "stdout.1.txt").read_text().strip() == "attempt 1"
    assert (jobdir / "stderr.2.txt").read_text() == "log 2"
    assert (jobdir / "stdout.txt").read_text().strip() == "attempt 3"


def test_a_job_waiting_for_its_retry_is_queued_with_a_run_at_and_ends_failed_when_attempts_run_out(
    fast: Settings,
) -> None:
    dispatcher = _start(fast)
    job_id = _submit(dispatcher, py("raise SystemExit(4)"), max_attempts=2, retry_backoff_seconds=1.0)
    waiting = wait_until(lambda: (job := dispatcher.get(job_id).get(timeout=ASK)).runs and job)
    assert waiting.status is Status.IN_QUEUE and waiting.run_at is not None and waiting.attempts == 1
    assert parse_timestamp(waiting.run_at) > parse_timestamp(waiting.runs[0].completed_at)
    job = _wait_status(dispatcher, job_id, Status.FAILED)
    assert job.attempts == 2 and len(job.runs) == 2 and job.error == "the command exited with code 4"


def test_limits_apply_to_each_attempt_and_a_limit_failure_is_retried(fast: Settings) -> None:
    dispatcher = _start(fast)
    job_id = _submit(
        dispatcher,
        [sys.executable, "-c", "import time; time.sleep(30)"],
        timeout_seconds=0.3,
        max_attempts=2,
        retry_backoff_seconds=0.05,
    )
    job = _wait_status(dispatcher, job_id, Status.FAILED)
    assert len(job.runs) == 2 and all(run.error.startswith("timed out") for run in job.runs)


def test_a_job_object_from_a_newer_version_with_unknown_run_fields_still_loads() -> None:
    data = {"id": "0" * 32, "args": ["true"], "status": "COMPLETED", "runs": [{"attempt": 1, "gpu_seconds": 3.0}]}
    job = Job.from_dict(data)
    assert job.runs[0].attempt == 1 and job.priority == 0 and job.queue == "default" and job.env == {}
    assert Job.from_dict(job.to_dict()) == job
