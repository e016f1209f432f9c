"""The chaos harness in small: SIGKILLs of a real server while clients submit lose no acknowledged job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_server_killed_three_times_while_clients_submit_loses_no_acknowledged_job(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "chaos.py"), "--jobs", "300", "--kills", "3", "--timeout", "60"]
    cmd += ["--jobs-dir", str(tmp_path / "jobs"), "--no-results"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=80, cwd=ROOT)
    report = done.stdout + done.stderr
    assert "kill 3/3" in report, report
    assert "acknowledged 300 /" in report, report
    assert "ZERO LOSS" in report, report
    assert "processes left: none" in report, report
    assert done.returncode == 0, report


def test_jobs_outlive_server_and_keeper_kills_with_real_exit_codes_exact_logs_and_one_run_per_attempt(
    tmp_path: Path,
) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "keeper_chaos.py"), "--jobs", "40", "--kills", "3", "--timeout", "80"]
    cmd += ["--jobs-dir", str(tmp_path / "jobs"), "--no-results", "--seed", "7"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110, cwd=ROOT)
    report = done.stdout + done.stderr
    assert "kill 3/3: SIGKILL of the server and its keeper" in report, report
    assert "checks: all passed" in report and "processes left: none" in report, report
    assert "ALL RIGHT" in report and done.returncode == 0, report
