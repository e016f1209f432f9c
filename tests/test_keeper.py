"""The keeper process: real job processes spawned, reaped and ended by a real keeper on tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from multiprocessing import AuthenticationError, Pipe
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import psutil
import pytest

from procq.actors import osdeps
from procq.actors.keeper import client as client_module
from procq.actors.keeper import protocol, records
from procq.actors.keeper.client import KeeperClient, KeeperError
from tests.helpers import ROOT, pid_alive, wait_until

# Ids of this test process's own: a keeper ends leftovers by their PROCQ_RUN marker machine-wide, and the
# xdist workers run these tests side by side (job ids are random in real life).
JOB_A, JOB_B, JOB_I = (uuid.uuid4().hex for _ in range(3))
POSIX = not osdeps.WINDOWS
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX signals and file modes")


class Exits:
    """The exit records a KeeperClient hears of, by run."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.lost = threading.Event()

    def add(self, record: dict[str, Any]) -> None:
        self.records[record["run"]] = record

    def wait(self, run: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_until(lambda: self.records.get(run), timeout)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Iterator[Path]:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    yield jobs
    _end_keeper(jobs)


def _end_keeper(jobs: Path) -> None:
    """Drain the keeper and make sure it is gone, whatever the test did."""
    try:
        info = json.loads((jobs / protocol.INFO).read_text())
    except (OSError, ValueError):
        return
    try:
        client = KeeperClient.connect(jobs)
        for run in client.runs():
            client.stop(run["run"], 0, "test over")
        client.drain()
        client.close()
    except KeeperError:
        pass
    try:
        proc = psutil.Process(info["pid"])
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        proc.kill()
        raise AssertionError("the keeper did not exit after a drain") from None


@pytest.fixture
def keeper(jobs_dir: Path) -> Iterator[tuple[KeeperClient, Exits]]:
    client = KeeperClient.ensure(jobs_dir)
    exits = Exits()
    client.follow(exits.add, exits.lost.set)
    yield client, exits
    client.close()


def _job_dir(jobs: Path, job_id: str) -> Path:
    path = jobs / job_id
    path.mkdir(exist_ok=True)
    return path


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_run_leaves_its_exit_record_and_its_output(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    client, exits = keeper
    path = _job_dir(jobs_dir, JOB_A)
    code = "import os, sys; print(os.environ['PROCQ_RUN']); sys.stderr.write('log'); raise SystemExit(7)"
    started = client.spawn(JOB_A, 1, _py(code), dict(os.environ))
    record = exits.wait(f"{JOB_A}.1")
    assert record == records.read(path, 1)  # on disk before anyone heard of it
    assert record["exit_code"] == 7 and record["signal"] is None and record["attempt"] == 1
    assert record["pid"] == started["pid"] and record["pid_started_at"] == started["pid_started_at"]
    assert record["ended_at"] >= record["started_at"] == started["started_at"]
    assert record["usage"]["cpu_user_s"] + record["usage"]["cpu_system_s"] > 0
    assert (path / "stdout.txt").read_bytes() == f"{JOB_A}.1\n".encode()
    assert (path / "stderr.txt").read_bytes() == b"log"
    assert not pid_alive(started["pid"])


@posix_only
def test_a_run_ended_by_a_signal_says_which(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    client, exits = keeper
    _job_dir(jobs_dir, JOB_A)
    client.spawn(JOB_A, 1, _py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), dict(os.environ))
    record = exits.wait(f"{JOB_A}.1")
    assert record["exit_code"] == -9 and record["signal"] == 9


def test_one_reaper_serves_many_children(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    client, exits = keeper
    keeper_proc = psutil.Process(client.pid)
    threads_idle = keeper_proc.num_threads()
    ids = [f"{n:032x}" for n in range(1, 41)]
    gate = jobs_dir / "gate"  # every child waits for it: all 40 run at once, however slow the spawns
    for n, job_id in enumerate(ids):
        _job_dir(jobs_dir, job_id)
        code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nraise SystemExit({n % 5})"
        client.spawn(job_id, 1, _py(code), dict(os.environ))
    assert len(client.runs()) == 40
    assert keeper_proc.num_threads() == threads_idle  # no thread per child
    gate.touch()
    for n, job_id in enumerate(ids):
        assert exits.wait(f"{job_id}.1")["exit_code"] == n % 5
    assert client.runs() == []


@posix_only
def test_stop_ends_the_tree_including_a_setsid_grandchild(
    jobs_dir: Path, keeper: tuple[KeeperClient, Exits], tmp_path: Path
) -> None:
    client, exits = keeper
    _job_dir(jobs_dir, JOB_A)
    pids = tmp_path / "pids"
    escapee = f"import os, time; os.setsid(); open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)"
    code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {escapee!r}]).wait(); time.sleep(60)"  # noqa: E501
    )
    client.spawn(JOB_A, 1, _py(code), dict(os.environ))
    escaped = int(wait_until(lambda: pids.exists() and pids.read_text().strip()))
    assert os.getsid(escaped) != os.getsid(client.runs()[0]["pid"])  # it really left the job's session
    assert client.stop(f"{JOB_A}.1", 1.0, "cancel")
    record = exits.wait(f"{JOB_A}.1")
    assert record["stopped"] == "cancel" and record["signal"] == signal.SIGTERM and record["survivors"] == []
    assert not pid_alive(escaped)


def test_what_a_job_leaves_behind_when_it_exits_is_ended_before_its_record(
    jobs_dir: Path, keeper: tuple[KeeperClient, Exits], tmp_path: Path
) -> None:
    client, exits = keeper
    _job_dir(jobs_dir, JOB_A)
    pids = tmp_path / "pids"
    daemon = f"import os, time; os.setsid(); open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)"
    code = f"import subprocess, sys, os, time; subprocess.Popen([sys.executable, '-c', {daemon!r}]); time.sleep(0.5)"
    client.spawn(JOB_A, 1, _py(code), dict(os.environ))
    record = exits.wait(f"{JOB_A}.1")
    assert record["exit_code"] == 0 and record["stopped"] == "leftovers"
    assert not pid_alive(int(pids.read_text()))


def test_an_attempt_is_never_started_twice(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    client, exits = keeper
    _job_dir(jobs_dir, JOB_A)
    client.spawn(JOB_A, 1, _py("import time; time.sleep(0.5)"), dict(os.environ))
    with pytest.raises(KeeperError, match="already running"):
        client.spawn(JOB_A, 1, _py("pass"), dict(os.environ))
    exits.wait(f"{JOB_A}.1")
    with pytest.raises(KeeperError, match="already run"):
        client.spawn(JOB_A, 1, _py("pass"), dict(os.environ))
    client.spawn(JOB_A, 2, _py("pass"), dict(os.environ))
    assert exits.wait(f"{JOB_A}.2")["attempt"] == 2


def test_a_command_that_cannot_start_is_refused_with_the_reason(
    jobs_dir: Path, keeper: tuple[KeeperClient, Exits]
) -> None:
    client, _ = keeper
    _job_dir(jobs_dir, JOB_A)
    with pytest.raises(KeeperError, match="could not start '/no/such/program'"):
        client.spawn(JOB_A, 1, ["/no/such/program"], dict(os.environ))
    assert client.runs() == []


STARTER = """
import os, sys, time
from pathlib import Path
from procq.actors.keeper.client import KeeperClient
jobs = Path(sys.argv[1])
client = KeeperClient.ensure(jobs)
(jobs / sys.argv[2]).mkdir()
client.spawn(sys.argv[2], 1, [sys.executable, "-c", "import time; time.sleep(1.5); print('done')"], dict(os.environ))
print(client.pid, flush=True)
time.sleep(60)
"""


def test_the_keeper_and_its_jobs_outlive_the_process_that_started_them(jobs_dir: Path) -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(jobs_dir), JOB_A], stdout=subprocess.PIPE, cwd=ROOT)
    assert starter.stdout is not None
    keeper_pid = int(starter.stdout.readline())
    starter.kill()
    starter.wait(5)
    assert pid_alive(keeper_pid)
    client = KeeperClient.connect(jobs_dir)
    assert client.pid == keeper_pid
    assert [run["run"] for run in client.runs()] == [f"{JOB_A}.1"]  # a new server finds the run
    record = wait_until(lambda: records.read(jobs_dir / JOB_A, 1), timeout=15)
    assert record["exit_code"] == 0
    assert (jobs_dir / JOB_A / "stdout.txt").read_bytes() == b"done\n"
    client.close()


def test_a_client_with_the_wrong_key_is_refused(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    client, _ = keeper
    address, family = protocol.address(jobs_dir)
    with pytest.raises(AuthenticationError):
        Client(address, family, authkey=b"x" * 32)
    assert client.runs() == []  # the keeper serves on


@posix_only
def test_the_key_file_is_readable_by_its_owner_only(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    assert (jobs_dir / protocol.KEY).stat().st_mode & 0o777 == 0o600


def test_a_client_of_another_protocol_version_is_told_so(jobs_dir: Path, keeper: tuple[KeeperClient, Exits]) -> None:
    address, family = protocol.address(jobs_dir)
    conn = Client(address, family, authkey=protocol.load_key(jobs_dir, create=False))
    conn.send({"op": "hello", "version": 99, "role": "control"})
    reply = conn.recv()
    conn.close()
    assert reply["ok"] is False and reply["versions"] == [protocol.VERSION]
    assert f"speaks protocol {protocol.VERSION}" in reply["error"] and "asked for 99" in reply["error"]


def test_a_second_keeper_for_the_same_directory_exits_at_once(
    jobs_dir: Path, keeper: tuple[KeeperClient, Exits]
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "procq.actors.keeper", "--jobs-dir", str(jobs_dir)], capture_output=True, timeout=20
    )
    assert second.returncode == 3
    assert keeper[0].runs() == []


def test_a_draining_keeper_takes_no_new_run_and_exits_once_idle(
    jobs_dir: Path, keeper: tuple[KeeperClient, Exits]
) -> None:
    client, exits = keeper
    _job_dir(jobs_dir, JOB_A)
    _job_dir(jobs_dir, JOB_B)
    client.spawn(JOB_A, 1, _py("import time; time.sleep(1)"), dict(os.environ))
    client.drain()
    with pytest.raises(KeeperError, match="draining"):
        client.spawn(JOB_B, 1, _py("pass"), dict(os.environ))
    assert exits.wait(f"{JOB_A}.1")["exit_code"] == 0
    assert exits.lost.wait(10)
    wait_until(lambda: not pid_alive(client.pid))
    assert not (jobs_dir / protocol.INFO).exists()


def test_channel_and_start_flags_on_windows_as_pure_logic(tmp_path: Path) -> None:
    address, family = osdeps.channel(Path("C:/procq/jobs"), "keeper-1", windows=True)
    assert family == "AF_PIPE" and address.startswith(r"\\.\pipe\procq-keeper-1-")
    flags = osdeps.detached_kwargs(windows=True)["creationflags"]
    assert flags == 0x8 | 0x200 | 0x01000000
    assert osdeps.detached_kwargs(windows=True, breakaway=False)["creationflags"] == 0x8 | 0x200
    assert osdeps.run_spawn_kwargs(windows=True) == {"creationflags": 0x200 | 0x08000000 | 0x4}
    assert osdeps.run_spawn_kwargs(windows=False) == {"start_new_session": True}
    assert not osdeps.become_subreaper(linux=False)
    assert osdeps.adopted(set(), linux=False) == []


@posix_only
def test_a_socket_path_too_long_for_unix_sockets_moves_to_a_private_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    address, family = osdeps.channel(deep, "keeper-1", windows=False)
    assert family == "AF_UNIX" and len(address) < 100
    assert Path(address).parent.stat().st_mode & 0o777 == 0o700
    assert osdeps.channel(deep, "keeper-1", windows=False) == (address, family)  # both sides agree


def test_a_keeper_killed_mid_run_ends_the_tree_and_reports_the_run_lost(jobs_dir: Path, tmp_path: Path) -> None:
    from procq.actors.keeper.link import End, Found, KeeperLink, found

    link = KeeperLink(jobs_dir, grace_s=0.5)
    ends: list[End] = []
    run = f"{JOB_A}.1"
    link.follow(run, ends.append)
    _job_dir(jobs_dir, JOB_A)
    started = link.spawn(JOB_A, 1, _py("import time; time.sleep(60)"), dict(os.environ), None)
    assert found(None, link.running(), run, True) is Found.RUNNING
    psutil.Process(link.keeper_pid).kill()
    end = wait_until(lambda: ends and ends[0])
    assert end.record is None and "keeper process that ran the job was lost" in end.lost
    assert not pid_alive(started["pid"])
    assert found(None, {}, run, False) is Found.LOST
    assert found({"attempt": 1}, {run: {}}, run, True) is Found.ENDED


def _marked(run: str) -> list[int]:
    """Live processes carrying this run marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(osdeps.RUN_MARKER) == run and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


def test_a_spawn_intent_is_durable_before_the_process_and_a_keeper_lost_after_it_counts_the_attempt(
    jobs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from procq.actors.keeper import intents
    from procq.actors.keeper.link import Found, found

    run = f"{JOB_I}.1"  # an id of its own: the marker scan must not see other tests' runs
    job_dir = _job_dir(jobs_dir, JOB_I)
    monkeypatch.setenv("PROCQ_TEST_CRASH_AT", "keeper-after-intent")  # the keeper started here inherits it
    crashing = KeeperClient.ensure(jobs_dir)
    with pytest.raises(KeeperError, match="went away"):
        crashing.spawn(JOB_I, 1, _py("import time; time.sleep(60)"), dict(os.environ))
    crashing.close()
    wait_until(lambda: not pid_alive(crashing.pid))
    assert intents.read(job_dir, 1) == {"run": run, "attempt": 1, "keeper_pid": crashing.pid}
    assert intents.read(job_dir, 2) is None
    assert _marked(run) == []  # it crashed before the spawn
    # The restart rule: the intent says the keeper may have started it, so the attempt counts;
    # without one, the attempt never reached a keeper and does not.
    assert found(None, {}, run, False, intended=True) is Found.LOST
    assert found(None, {}, run, False, intended=False) is Found.NOT_STARTED
    monkeypatch.delenv("PROCQ_TEST_CRASH_AT")
    client = KeeperClient.ensure(jobs_dir)  # a new keeper: a late request for that run is refused
    try:
        with pytest.raises(KeeperError, match="may have started already"):
            client.spawn(JOB_I, 1, _py("pass"), dict(os.environ))
        assert client.runs() == [] and _marked(run) == []
    finally:
        client.close()


def test_a_reply_that_comes_after_its_timeout_is_not_taken_for_the_next_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel is in order: a late answer to a request that timed out must be skipped, not read as
    the answer to the request after it (a real connection; the keeper end answers the first one late)."""
    monkeypatch.setattr(client_module, "_REPLY_TIMEOUT_S", 0.3)
    ours, theirs = Pipe()
    answered = threading.Event()

    def keeper_end() -> None:
        for number in range(2):
            request = theirs.recv()
            if number == 0:
                answered.wait(5)  # answers the first request only after the client gave up on it
            theirs.send({"ok": True, "runs": [{"run": request["op"] + str(number)}]})

    threading.Thread(target=keeper_end, daemon=True).start()
    client = KeeperClient(tmp_path, ours, {"pid": os.getpid()}, protocol.VERSION)
    with pytest.raises(KeeperError, match="did not answer"):
        client.runs()
    answered.set()
    assert client.runs() == [{"run": "list1"}]


def test_a_keeper_that_dies_before_it_listens_is_replaced(jobs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first keeper started is a real process that exits before it listens (as one killed while it
    starts); the server's `ensure` starts another instead of waiting out its timeout."""
    real_start, started = client_module.start, []

    def start(jobs: Path) -> subprocess.Popen[bytes]:
        started.append(jobs)
        if len(started) == 1:
            return subprocess.Popen([sys.executable, "-c", "raise SystemExit(9)"])
        return real_start(jobs)

    monkeypatch.setattr(client_module, "start", start)
    client = KeeperClient.ensure(jobs_dir, timeout_s=5)
    try:
        assert len(started) == 2 and psutil.Process(client.pid).is_running()
        assert client.runs() == []
    finally:
        client.close()
