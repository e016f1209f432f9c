"""Cluster chaos in the suite: bench/cluster_chaos.py with three real nodes on one real PostgreSQL schema,
whole nodes (server, keeper, jobs) SIGKILLed at random moments (fixed seed) and restarted with the same
name and jobs directory. Every check is the harness's: zero loss, exact exit codes or the reason, byte-exact
results through any node, no job running twice at once, every run counted among the attempts (an attempt
without a run only for a claim its node died holding), no orphans, whole meta.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from procq.actors.keeper import protocol
from tests.helpers import ROOT, ServerProcess, end_keeper, wait_until
from tests.pgdb import admin

JOBS, KILLS = 600, 3  # the 2,000-job run is the bench's (bench/RESULTS.md): it takes 2-3 min on 2 shared cores
LEASE_S = 3.0


def test_whole_nodes_killed_and_restarted_lose_no_job_and_never_run_one_twice_at_once(tmp_path: Path) -> None:
    admin().close()  # skips (or fails with PROCQ_REQUIRE_POSTGRES=1) without a database
    cmd = [sys.executable, str(ROOT / "bench" / "cluster_chaos.py"), "--jobs", str(JOBS), "--kills", str(KILLS)]
    cmd += ["--seed", "7", "--timeout", "150", "--dir", str(tmp_path / "cluster"), "--no-results"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=200, cwd=ROOT)
    report = done.stdout + done.stderr
    assert f"kill {KILLS}/{KILLS}" in report, report
    assert f"acknowledged {JOBS};" in report, report
    assert "checks: all passed" in report and "keepers left after the stop: none" in report, report
    assert "ALL RIGHT" in report and done.returncode == 0, report


def test_a_node_serves_the_result_its_job_had_elsewhere_not_its_own_file_of_a_lost_attempt(
    tmp_path: Path, pg_url: str
) -> None:
    """Found by the chaos: a node whose run of a job was lost keeps that attempt's stdout.txt; once the
    job COMPLETED elsewhere, that node answered the result from its stale file."""
    attempt = "import os, time; a = os.environ['PROCQ_RUN'].split('.')[1]; print('attempt', a, flush=True)"
    job_args = [sys.executable, "-c", attempt + "; time.sleep(60 if a == '1' else 0)"]
    nodes = {name: _node(tmp_path, pg_url, name) for name in ("n1", "n2")}
    try:
        job = nodes["n1"].submit(job_args, max_attempts=2)
        running = wait_until(lambda: (j := nodes["n1"].status(job["id"]))["pid"] is not None and j, timeout=20)
        lost, other = running["node"], "n2" if running["node"] == "n1" else "n1"
        victim = nodes[lost]
        wait_until(lambda: (victim.jobs_dir / job["id"] / "stdout.txt").read_bytes() == b"attempt 1\n", timeout=10)
        keeper = json.loads((victim.jobs_dir / protocol.INFO).read_text())["pid"]
        victim.proc.kill()  # the whole node: server, keeper, the job's process
        victim.wait(10)
        for pid in (keeper, running["pid"]):
            os.kill(pid, signal.SIGKILL)
        done = nodes[other].wait_status(job["id"], "COMPLETED", timeout=LEASE_S + 20)
        assert (done["attempts"], done["node"]) == (2, other)
        nodes[lost] = _node(tmp_path, pg_url, lost)  # back with the same name and jobs directory
        assert (victim.jobs_dir / job["id"] / "stdout.txt").read_bytes() == b"attempt 1\n"  # its lost attempt's
        for node in nodes.values():
            answer = node.get(f"/jobs/{job['id']}/result")
            assert (answer.status_code, answer.content) == (200, b"attempt 2\n")
    finally:
        for node in nodes.values():
            if node.proc.poll() is None:
                node.stop()
            end_keeper(node.jobs_dir)


def _node(tmp_path: Path, pg_url: str, name: str) -> ServerProcess:
    args = ("--node-name", name, "--workers", "2", "--lease", str(LEASE_S))
    return ServerProcess(tmp_path / name, *args, env={"PROCQ_DATABASE_URL": pg_url})
