"""osdeps: its Windows branches as pure logic, and real tree kills (the fence around it: test_fence.py)."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from procq.actors import osdeps
from tests.helpers import ROOT, pid_alive, wait_until


def test_windows_spawn_uses_a_new_group_and_no_window() -> None:
    kwargs = osdeps.spawn_kwargs(windows=True)
    assert kwargs == {"creationflags": 0x200 | 0x08000000}
    assert osdeps.spawn_kwargs(windows=False) == {"start_new_session": True}


def test_sharing_violation_is_transient_only_on_windows() -> None:
    exc = PermissionError(errno.EACCES, "in use")
    exc.winerror = 32  # type: ignore[attr-defined]
    assert osdeps.is_transient(exc, windows=True)
    assert not osdeps.is_transient(exc, windows=False)
    assert not osdeps.is_transient(PermissionError(errno.EACCES, "denied"), windows=True)


def test_replace_file_retries_while_windows_reports_the_file_in_use(tmp_path: Path, monkeypatch) -> None:
    src, dst = tmp_path / "a.tmp", tmp_path / "meta.json"
    src.write_bytes(b"new")
    real_replace, calls = os.replace, []

    def flaky(a: Path, b: Path) -> None:
        calls.append(a)
        if len(calls) <= 2:
            exc = PermissionError(errno.EACCES, "in use")
            exc.winerror = 32  # type: ignore[attr-defined]
            raise exc
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    osdeps.replace_file(src, dst, windows=True, sleep=lambda s: None)
    assert dst.read_bytes() == b"new" and len(calls) == 3


def test_replace_file_gives_up_after_its_budget(tmp_path: Path, monkeypatch) -> None:
    def always_busy(a: Path, b: Path) -> None:
        exc = PermissionError(errno.EACCES, "in use")
        exc.winerror = 32  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(os, "replace", always_busy)
    slept: list[float] = []
    with pytest.raises(PermissionError):
        osdeps.replace_file(tmp_path / "a", tmp_path / "b", windows=True, sleep=slept.append, budget=0.5)
    assert 0.5 <= sum(slept) < 0.7


def test_batch_files_are_refused_only_on_windows() -> None:
    assert osdeps.command_refusal(["run.BAT. "], windows=True)
    assert osdeps.command_refusal(["C:\\x\\tool.cmd", "a"], windows=True)
    assert osdeps.command_refusal(["tool.cmd"], windows=False) is None
    assert osdeps.command_refusal(["tool.exe"], windows=True) is None


def test_osdeps_imports_and_its_pure_helpers_run_in_windows_mode(monkeypatch) -> None:
    module = importlib.reload(osdeps)
    monkeypatch.setattr(module, "WINDOWS", True)
    assert "creationflags" in module.spawn_kwargs(windows=module.WINDOWS)
    module.fsync_dir(Path("/nonexistent-dir"), windows=True)  # a no-op on Windows, so no error


def test_install_shutdown_refuses_other_threads() -> None:
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            osdeps.install_shutdown(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(5)
    assert len(errors) == 1


TREE = """
import subprocess, sys, time
code = "import time; time.sleep(60)"
subprocess.Popen([sys.executable, "-c", code])
# a child that starts a grandchild and exits: the grandchild is orphaned
subprocess.Popen([sys.executable, "-c", "import subprocess,sys; subprocess.Popen([sys.executable, '-c', %r]); " % code]).wait()
print("ready", flush=True)
time.sleep(60)
"""


def _spawn_tree() -> tuple[subprocess.Popen[bytes], list[int]]:
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, **osdeps.spawn_kwargs())
    assert root.stdout is not None and root.stdout.readline().strip() == b"ready"
    # root, its sleeping child, and the grandchild orphaned when its parent exited
    group = wait_until(lambda: len(pids := _group(root.pid)) == 3 and pids)
    return root, group


def _group(pgid: int) -> list[int]:
    # Every member of the job's session, whoever its parent is now (orphans are reparented).
    return [p.pid for p in psutil.process_iter(["pid"]) if _sid(p.pid) == pgid and pid_alive(p.pid)]


def _sid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the whole session")
def test_stop_tree_ends_every_process_the_job_started() -> None:
    root, members = _spawn_tree()
    try:
        started = time.monotonic()
        survivors = osdeps.stop_tree(root.pid, osdeps.identity(root.pid)[1], grace=1.0)
        assert survivors == []
        assert time.monotonic() - started < 3
        root.wait(5)
        wait_until(lambda: not any(pid_alive(p) for p in members), timeout=5)
    finally:
        for pid in members:
            if pid_alive(pid):
                psutil.Process(pid).kill()


def test_stop_tree_spares_a_process_whose_start_time_does_not_match() -> None:
    root, members = _spawn_tree()
    try:
        assert osdeps.stop_tree(root.pid, osdeps.identity(root.pid)[1] - 100.0, grace=0.2) == []
        time.sleep(0.3)  # give a wrong kill the time to show
        assert all(pid_alive(p) for p in members)
    finally:
        osdeps.stop_tree(root.pid, osdeps.identity(root.pid)[1], grace=0)
        root.wait(5)


def test_lock_keeps_a_second_holder_out(tmp_path: Path) -> None:
    first = osdeps.lock_exclusively(tmp_path / ".lock")
    code = f"from procq.actors import osdeps; osdeps.lock_exclusively(__import__('pathlib').Path({str(tmp_path / '.lock')!r}))"
    second = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    first.close()
    assert second.returncode != 0 and b"Error" in second.stderr
