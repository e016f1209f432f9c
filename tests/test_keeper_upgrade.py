"""Upgrades across keeper protocol versions: real servers, real keepers of two versions side by side.

An "older procq" is the same code told to speak another keeper protocol (PROCQ_TEST_KEEPER_PROTOCOL,
a test-only override that does nothing unless set): its server and its keeper speak only that
version, with their own channel, lock and info file, as a real older release would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil

from procq.actors.keeper import protocol
from tests.helpers import pid_alive, py, wait_until

OLDER = {protocol.TEST_VERSION: "0"}  # a release whose keeper speaks protocol 0 only
NEWER_SPEAKING_1 = {protocol.TEST_VERSION: "2:1,2"}  # a release of protocol 2 that still speaks 1

# Prints 0..199 to each stream, then waits for the gate file (so the test sees it running), exits 7.
COUNT_WAIT_THEN_7 = (
    "import os, sys, time\n"
    "with open(sys.argv[1], 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
    "for i in range(200):\n"
    "    print(i, flush=True)\n"
    "    print(f'e{i}', file=sys.stderr, flush=True)\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.02)\n"
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


def _keeper(jobs_dir: Path, version: int) -> psutil.Process:
    info = json.loads((jobs_dir / protocol.info(version)).read_text())
    assert info["version"] == version
    return psutil.Process(info["pid"])


def test_a_new_server_lets_an_older_keeper_finish_its_job_while_its_own_keeper_takes_new_ones(
    start_server, tmp_path: Path
) -> None:
    runs, gate = tmp_path / "runs.txt", tmp_path / "gate"
    old = start_server(env=OLDER)
    job = old.submit([*py(COUNT_WAIT_THEN_7), str(runs), str(gate)])
    running = old.wait_status(job["id"], "IN_PROGRESS")
    old_keeper = _keeper(old.jobs_dir, 0)
    stdout = old.jobs_dir / job["id"] / "stdout.txt"
    wait_until(lambda: stdout.exists() and len(stdout.read_bytes()) == len(EXPECTED_OUT))
    old.kill()

    new = start_server()  # this release: cannot speak 0, so it drains that keeper and starts its own
    new_keeper = _keeper(new.jobs_dir, protocol.VERSION)
    assert new_keeper.pid != old_keeper.pid
    assert new.wait_status(job["id"], "IN_PROGRESS")["attempts"] == 1
    assert psutil.Process(running["pid"]).ppid() == old_keeper.pid  # still on the old keeper
    fresh = new.submit(py("import os; print(os.getppid())"))
    new.wait_status(fresh["id"], "COMPLETED")
    assert (new.jobs_dir / fresh["id"] / "stdout.txt").read_text().strip() == str(new_keeper.pid)
    assert old_keeper.is_running()  # draining: it still has a run

    gate.touch()
    done = new.wait_status(job["id"], "FAILED", timeout=30)
    assert done["exit_code"] == 7 and done["attempts"] == 1
    record = json.loads((new.jobs_dir / job["id"] / "exit.json").read_text())
    assert record["keeper_version"] == 0 and done["completed_at"] == record["ended_at"]
    assert (new.jobs_dir / job["id"] / "stdout.txt").read_bytes() == EXPECTED_OUT
    assert (new.jobs_dir / job["id"] / "stderr.txt").read_bytes() == EXPECTED_ERR
    old_keeper.wait(15)  # idle and drained: it exits
    assert not (new.jobs_dir / protocol.info(0)).exists()
    assert len(runs.read_text().split()) == 1  # exactly one run
    assert new_keeper.is_running()
    assert new.stop() == 0


def test_cancel_still_ends_the_whole_tree_of_a_job_on_an_older_keeper(start_server, tmp_path: Path) -> None:
    escapee_file = tmp_path / "escapee.pid"
    old = start_server(env=OLDER)
    job = old.submit([*py(SETSID_TREE), str(escapee_file)])
    running = old.wait_status(job["id"], "IN_PROGRESS")
    escapee = int(wait_until(lambda: escapee_file.exists() and escapee_file.read_text()))
    old_keeper = _keeper(old.jobs_dir, 0)
    old.kill()
    new = start_server()
    assert new.wait_status(job["id"], "IN_PROGRESS")["attempts"] == 1
    assert new.put(f"/jobs/{job['id']}/cancel").status_code == 200
    assert new.wait_status(job["id"], "CANCELED")["attempts"] == 1
    assert not pid_alive(running["pid"]) and not pid_alive(escapee)
    old_keeper.wait(15)
    assert new.stop() == 0


def test_a_new_server_that_still_speaks_the_running_keepers_version_re_adopts_it(start_server, tmp_path: Path) -> None:
    runs, gate = tmp_path / "runs.txt", tmp_path / "gate"
    old = start_server(env={protocol.TEST_VERSION: "1"})  # a release of protocol 1
    job = old.submit([*py(COUNT_WAIT_THEN_7), str(runs), str(gate)])
    old.wait_status(job["id"], "IN_PROGRESS")
    keeper = _keeper(old.jobs_dir, 1)
    old.kill()
    new = start_server(env=NEWER_SPEAKING_1)
    fresh = new.submit(py("import os; print(os.getppid())"))
    new.wait_status(fresh["id"], "COMPLETED")
    assert (new.jobs_dir / fresh["id"] / "stdout.txt").read_text().strip() == str(keeper.pid)  # the same keeper
    assert not (new.jobs_dir / protocol.info(2)).exists()  # no second keeper
    gate.touch()
    done = new.wait_status(job["id"], "FAILED", timeout=30)
    assert done["exit_code"] == 7 and done["attempts"] == 1
    assert len(runs.read_text().split()) == 1
    assert keeper.is_running()  # attached: it is this server's keeper now
    assert new.stop() == 0


def test_the_minimal_protocol_is_answered_whatever_the_version_and_nothing_else_on_it(tmp_path: Path) -> None:
    from procq.actors.keeper.client import KeeperClient, KeeperError
    from tests.helpers import end_keeper

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    ours = KeeperClient.ensure(jobs)
    try:
        minimal = KeeperClient.connect_minimal(jobs, protocol.VERSION)
        assert minimal.runs() == []
        try:
            minimal.spawn("0" * 32, 1, [sys.executable, "-c", "pass"], {})
        except KeeperError as exc:
            assert "not in the minimal protocol" in str(exc)
        else:
            raise AssertionError("a spawn on a minimal connection was accepted")
        minimal.drain()  # idle and drained: it exits
        psutil.Process(ours.pid).wait(15)
        minimal.close()
    finally:
        ours.close()
        end_keeper(jobs)


def test_an_older_keeper_killed_while_draining_ends_its_tree_and_the_job_runs_again_on_the_new_one(
    start_server, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    code = (
        "import os, sys, time\n"
        "first = not os.path.exists(sys.argv[1])\n"
        "with open(sys.argv[1], 'a') as runs: runs.write(f'{os.getpid()}\\n')\n"
        "time.sleep(60 if first else 0)\n"
    )
    old = start_server(env=OLDER)
    job = old.submit([*py(code), str(runs)])
    running = old.wait_status(job["id"], "IN_PROGRESS")
    wait_until(runs.exists)
    old_keeper = _keeper(old.jobs_dir, 0)
    old.kill()
    new = start_server()
    assert new.wait_status(job["id"], "IN_PROGRESS")["attempts"] == 1
    old_keeper.kill()
    old_keeper.wait(10)
    done = new.wait_status(job["id"], "COMPLETED", timeout=30)
    assert done["attempts"] == 2 and "keeper" in done["interrupted"]
    assert not pid_alive(running["pid"])  # the lost run's tree was ended before the rerun
    assert len(runs.read_text().split()) == 2
    assert new.stop() == 0


def test_keepers_of_two_versions_never_share_a_channel_lock_or_info_file_windows_included(tmp_path: Path) -> None:
    from procq.actors import osdeps

    for windows in (False, True):
        one, two = (osdeps.channel(tmp_path, f"keeper-{v}", windows=windows)[0] for v in (1, 2))
        assert one != two
    assert osdeps.channel(tmp_path, "keeper-2", windows=True)[0].startswith(r"\\.\pipe\procq-keeper-2-")
    assert protocol.info(1) != protocol.info(2)
    for name in (".keeper-0.json", ".keeper-12.json", ".keeper-x.json", ".keeper.key"):
        (tmp_path / name).write_text("{}")
    assert protocol.running_versions(tmp_path) == [0, 12]
    assert protocol._versions(None) == (2, (2,))
    assert protocol._versions("0") == (0, (0,))
    assert protocol._versions("2:1,2") == (2, (1, 2))
