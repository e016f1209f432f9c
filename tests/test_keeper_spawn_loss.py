"""A keeper that dies in the middle of a spawn while the server lives: a real server, a real keeper
crashing at a real step of the spawn (PROCQ_TEST_CRASH_AT), real job processes.

The crashing keeper is started by the test with the fault hook set; the server, started without it,
re-adopts that keeper, and the keeper it brings up after the loss runs normally.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from procq.actors.keeper.client import KeeperClient
from procq.actors.keeper.link import End, KeeperLink
from tests.helpers import pid_alive, py, wait_until

# Appends its pid to argv[1]; exits 3 if a process of an earlier run is still alive (an overlap);
# attempt 1 then sleeps a minute, so an orphan of it would still be there to find.
RUN_ONCE_PER_ATTEMPT = (
    "import os, sys, time, psutil\n"
    "def alive(pid):\n"
    "    try:\n"
    "        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE\n"
    "    except psutil.Error:\n"
    "        return False\n"
    "earlier = open(sys.argv[1]).read().split() if os.path.exists(sys.argv[1]) else []\n"
    "with open(sys.argv[1], 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
    "if any(alive(int(pid)) for pid in earlier): sys.exit(3)\n"
    "time.sleep(60 if os.environ['PROCQ_RUN'].endswith('.1') else 0)\n"
)
APPEND_PID = "import os, sys; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n')"


def _crashing_keeper(jobs_dir: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> int:
    """Start the keeper of `jobs_dir` with the fault hook at `step`; returns its pid."""
    monkeypatch.setenv("PROCQ_TEST_CRASH_AT", step)
    client = KeeperClient.ensure(jobs_dir)
    client.close()
    monkeypatch.delenv("PROCQ_TEST_CRASH_AT")
    return client.pid


def _marked(run: str) -> list[int]:
    """Live processes carrying this run marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PROCQ_RUN") == run and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


def test_a_keeper_lost_before_the_spawn_intent_starts_the_attempt_again_uncounted(
    start_server, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.txt"
    crashed = _crashing_keeper(jobs_dir, monkeypatch, "keeper-before-intent")
    server = start_server()
    job = server.submit([*py(APPEND_PID), str(runs)])
    done = server.wait_status(job["id"], "COMPLETED", "FAILED", timeout=30)
    assert done["status"] == "COMPLETED", done
    assert done["attempts"] == 1 and not done.get("interrupted") and done["error"] is None
    assert len(runs.read_text().split()) == 1
    assert not pid_alive(crashed)
    assert server.stop() == 0


def test_a_keeper_lost_after_the_spawn_before_its_reply_leaves_no_orphan_and_counts_the_attempt(
    start_server, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.txt"
    crashed = _crashing_keeper(jobs_dir, monkeypatch, "keeper-after-spawn")
    server = start_server()
    job = server.submit([*py(RUN_ONCE_PER_ATTEMPT), str(runs)])
    done = server.wait_status(job["id"], "COMPLETED", "FAILED", timeout=30)
    assert done["status"] == "COMPLETED", done  # exit 3 would say two runs overlapped
    assert done["attempts"] == 2 and "keeper" in done["interrupted"]
    assert _marked(f"{job['id']}.1") == []  # the first run's process was found by its marker and ended
    pids = runs.read_text().split()
    assert 1 <= len(pids) <= done["attempts"]  # the first run may have been ended before it wrote
    assert not any(pid_alive(int(pid)) for pid in pids)
    assert not pid_alive(crashed)
    assert server.stop() == 0


def test_a_keeper_lost_after_the_spawn_intent_counts_the_attempt_though_nothing_ran(
    start_server, jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.txt"
    _crashing_keeper(jobs_dir, monkeypatch, "keeper-after-intent")
    server = start_server()
    job = server.submit([*py(APPEND_PID), str(runs)])
    done = server.wait_status(job["id"], "COMPLETED", "FAILED", timeout=30)
    # the intent says it may have run: attempt 1 counts, attempt 2 is the one that ran
    assert done["status"] == "COMPLETED" and done["attempts"] == 2 and "keeper" in done["interrupted"]
    assert len(runs.read_text().split()) == 1
    assert server.stop() == 0


def test_a_keeper_lost_mid_spawn_fails_a_job_that_may_not_run_again_with_the_reason(
    start_server, jobs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crashing_keeper(jobs_dir, monkeypatch, "keeper-after-spawn")
    server = start_server("--restart-limit", "1")
    job = server.submit(py("import time; time.sleep(60)"))
    failed = server.wait_status(job["id"], "FAILED", timeout=30)
    assert "keeper" in failed["error"] and failed["exit_code"] is None and failed["attempts"] == 1
    assert _marked(f"{job['id']}.1") == []
    assert server.stop() == 0


def test_keepers_that_keep_dying_before_the_spawn_intent_fail_the_job_instead_of_looping(
    start_server, jobs_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    server = start_server(env={"PROCQ_TEST_CRASH_AT": "keeper-before-intent"})  # every keeper it starts dies
    job = server.submit([*py(APPEND_PID), str(runs)])
    failed = server.wait_status(job["id"], "FAILED", timeout=30)
    assert "before it started the job (3 keepers in a row)" in failed["error"], failed
    assert failed["attempts"] == 1 and failed["exit_code"] is None
    assert not runs.exists() and not (jobs_dir / job["id"] / "spawn.json").exists()
    assert server.stop() == 0


def test_a_run_followed_as_its_keeper_dies_but_not_yet_asked_for_starts_on_the_next_keeper_and_ends_once(
    jobs_dir: Path,
) -> None:
    # The keeper dies between the Supervisor's follow and its spawn request: that run is not lost
    # (nothing of it was asked for); it starts on the next keeper and its follower hears its own end.
    job_id = "0123456789abcdef0123456789abcdef"
    (jobs_dir / job_id).mkdir()
    link = KeeperLink(jobs_dir, grace_s=0.5)
    ends: list[End] = []
    link.follow(f"{job_id}.1", ends.append)
    first = link.keeper_pid
    psutil.Process(first).kill()
    wait_until(lambda: link.keeper_pid != first)  # the loss was seen and a new keeper started
    assert ends == []
    started = link.spawn(job_id, 1, py("print('ran')"), {}, None)
    end = wait_until(lambda: ends and ends[0])
    assert end.record is not None and end.record["exit_code"] == 0 and end.record["pid"] == started["pid"]
    assert len(ends) == 1 and (jobs_dir / job_id / "stdout.txt").read_text() == "ran\n"
    link.close(keep_running=False)
