"""Jobs outlive the server: real servers SIGKILLed mid-job, a real keeper, real job processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from procq.actors.keeper import protocol
from tests.helpers import Receiver, pid_alive, py, wait_until

COUNT_THEN_7 = (
    "import os, sys, time\n"
    "with open(sys.argv[1], 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
    "for i in range(200):\n"
    "    print(i, flush=True)\n"
    "    print(f'e{i}', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.01)\n"
    "sys.exit(7)\n"
)
EXPECTED_OUT = "".join(f"{i}\n" for i in range(200)).encode()
EXPECTED_ERR = "".join(f"e{i}\n" for i in range(200)).encode()

SETSID_TREE = (
    "import os, subprocess, sys, time\n"
    "code = 'import os, sys, time; os.setsid(); open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(60)'\n"
    "subprocess.Popen([sys.executable, '-c', code, sys.argv[1]])\n"
    "time.sleep(60)\n"
)


def _keeper_pid(jobs_dir: Path) -> int:
    return int(json.loads((jobs_dir / protocol.INFO).read_text())["pid"])


def _marked(job_id: str) -> list[int]:
    """Live processes carrying a run marker of this job."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PROCQ_RUN", "").startswith(job_id) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


def test_a_job_outlives_a_server_crash_and_ends_with_its_real_exit_code_output_and_one_webhook(
    start_server, receiver: Receiver, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    server = start_server()
    job = server.submit([*py(COUNT_THEN_7), str(runs)], webhook=receiver.url)
    server.wait_status(job["id"], "IN_PROGRESS")
    stdout = server.jobs_dir / job["id"] / "stdout.txt"
    wait_until(lambda: stdout.exists() and len(stdout.read_bytes()) > 20)  # it is part way through
    server.kill()
    again = start_server()
    done = again.wait_status(job["id"], "FAILED", timeout=30)
    assert done["exit_code"] == 7 and done["attempts"] == 1
    assert (again.jobs_dir / job["id"] / "stdout.txt").read_bytes() == EXPECTED_OUT
    assert (again.jobs_dir / job["id"] / "stderr.txt").read_bytes() == EXPECTED_ERR
    assert len(runs.read_text().split()) == 1  # exactly one run
    assert receiver.wait_for(1)[0]["status"] == "FAILED"
    time.sleep(1.0)  # time for a second (wrong) delivery to arrive
    assert len(receiver.deliveries) == 1
    assert again.stop() == 0


def test_a_job_that_ends_while_the_server_is_down_gets_its_exit_code_and_end_time_from_the_record(
    start_server,
) -> None:
    server = start_server()
    job = server.submit(py("import sys, time; time.sleep(0.5); sys.exit(3)"))
    server.wait_status(job["id"], "IN_PROGRESS")
    server.kill()
    record_path = server.jobs_dir / job["id"] / "exit.json"
    record = wait_until(lambda: record_path.exists() and json.loads(record_path.read_text()))
    again = start_server()
    done = again.wait_status(job["id"], "FAILED")
    assert done["exit_code"] == 3 and done["attempts"] == 1
    assert done["completed_at"] == record["ended_at"]
    assert again.stop() == 0


def test_after_a_restart_cancel_still_ends_the_whole_tree_including_a_setsid_grandchild(
    start_server, tmp_path: Path
) -> None:
    escapee_file = tmp_path / "escapee.pid"
    server = start_server()
    job = server.submit([*py(SETSID_TREE), str(escapee_file)])
    running = server.wait_status(job["id"], "IN_PROGRESS")
    escapee = int(wait_until(lambda: escapee_file.exists() and escapee_file.read_text()))
    server.kill()
    again = start_server()
    assert pid_alive(running["pid"]) and pid_alive(escapee)
    assert again.wait_status(job["id"], "IN_PROGRESS")["attempts"] == 1
    assert again.put(f"/jobs/{job['id']}/cancel").status_code == 200
    assert again.wait_status(job["id"], "CANCELED")["attempts"] == 1
    assert not pid_alive(running["pid"]) and not pid_alive(escapee)
    assert again.stop() == 0


def test_on_stop_keep_leaves_the_job_running_for_the_next_server_which_concludes_it(
    start_server, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    server = start_server("--on-stop", "keep")
    job = server.submit([*py(COUNT_THEN_7), str(runs)])
    running = server.wait_status(job["id"], "IN_PROGRESS")
    assert server.stop(signal.SIGTERM) == 0
    assert pid_alive(running["pid"])  # the job lives on under the keeper
    again = start_server()
    done = again.wait_status(job["id"], "FAILED", timeout=30)
    assert done["exit_code"] == 7 and done["attempts"] == 1
    assert (again.jobs_dir / job["id"] / "stdout.txt").read_bytes() == EXPECTED_OUT
    assert len(runs.read_text().split()) == 1
    assert again.stop() == 0


def test_the_default_stop_ends_running_trees_and_the_keeper_exits_too(start_server) -> None:
    server = start_server()
    job = server.submit(py("import time; time.sleep(60)"))
    running = server.wait_status(job["id"], "IN_PROGRESS")
    keeper = psutil.Process(_keeper_pid(server.jobs_dir))
    assert server.stop(signal.SIGTERM) == 0
    assert not pid_alive(running["pid"])
    keeper.wait(15)  # raises if the keeper is still there


def test_a_keeper_killed_mid_job_ends_the_tree_and_the_job_runs_again_never_completed_from_a_lost_run(
    start_server, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    code = (
        "import os, sys, time\n"
        "first = not os.path.exists(sys.argv[1])\n"
        "with open(sys.argv[1], 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
        "time.sleep(60 if first else 0)\n"
    )
    server = start_server()
    job = server.submit([*py(code), str(runs)])
    running = server.wait_status(job["id"], "IN_PROGRESS")
    wait_until(runs.exists)
    keeper = psutil.Process(_keeper_pid(server.jobs_dir))
    keeper.kill()
    keeper.wait(10)
    done = server.wait_status(job["id"], "COMPLETED", timeout=30)
    assert done["attempts"] == 2 and "keeper" in done["interrupted"]
    assert not pid_alive(running["pid"])
    assert len(runs.read_text().split()) == 2
    assert server.stop() == 0


def test_a_keeper_killed_mid_job_fails_a_job_that_may_not_run_again_with_the_reason(start_server) -> None:
    server = start_server("--restart-limit", "1")
    job = server.submit(py("import time; time.sleep(60)"))
    running = server.wait_status(job["id"], "IN_PROGRESS")
    psutil.Process(_keeper_pid(server.jobs_dir)).kill()
    failed = server.wait_status(job["id"], "FAILED", timeout=30)
    assert "keeper" in failed["error"] and failed["exit_code"] is None and failed["attempts"] == 1
    assert not pid_alive(running["pid"])
    assert server.stop() == 0


@pytest.mark.parametrize("step", ["before-record", "after-record", "after-spawn"])
def test_a_crash_at_any_step_of_a_start_leaves_exactly_one_run_and_no_unnamed_process(
    start_server, tmp_path: Path, step: str
) -> None:
    runs = tmp_path / "runs.txt"
    code = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(1)"
    server = start_server(env={"PROCQ_TEST_CRASH_AT": step})
    # delayed a second, so the submit is answered (and so committed) before the start that crashes
    response = server.post("/jobs", json={"args": [*py(code), str(runs)], "delay_seconds": 1})
    assert response.status_code == 201
    assert server.wait(20) == 70  # it crashed where it was told to
    job_id = next(entry.name for entry in server.jobs_dir.iterdir() if len(entry.name) == 32)
    again = start_server()
    done = again.wait_status(job_id, "COMPLETED", timeout=30)
    assert done["attempts"] == 1
    assert len(runs.read_text().split()) == 1
    assert _marked(job_id) == []
    assert again.stop() == 0


def test_a_server_and_keeper_both_killed_between_the_record_and_the_spawn_do_not_count_the_attempt(
    start_server, tmp_path: Path
) -> None:
    # What the 10,000-job chaos found: the attempt was recorded, then both processes died before the
    # spawn. No spawn intent was written, so the attempt never reached a process: run it again as 1.
    runs = tmp_path / "runs.txt"
    code = "import os, sys; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n')"
    warm = start_server()  # starts the keeper
    warm_job = warm.submit(py("pass"))
    warm.wait_status(warm_job["id"], "COMPLETED")
    warm.kill()
    server = start_server(env={"PROCQ_TEST_CRASH_AT": "after-record"})
    response = server.post("/jobs", json={"args": [*py(code), str(runs)], "delay_seconds": 1})
    assert response.status_code == 201
    assert server.wait(20) == 70  # recorded, not spawned
    keeper = psutil.Process(_keeper_pid(server.jobs_dir))
    keeper.kill()
    keeper.wait(10)
    job_id = response.json()["id"]
    assert not (server.jobs_dir / job_id / "spawn.json").exists()
    again = start_server()
    done = again.wait_status(job_id, "COMPLETED", timeout=30)
    assert done["attempts"] == 1 and not done.get("interrupted")
    assert len(runs.read_text().split()) == 1
    assert json.loads((again.jobs_dir / job_id / "spawn.json").read_text())["attempt"] == 1
    assert again.stop() == 0
