"""--run-as USER: a server started as root runs every job as that user, who owns the job's files."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procq.actors import osdeps
from tests.helpers import ROOT, wait_until


@pytest.fixture(scope="module")
def user() -> Iterator[osdeps.RunAs]:
    """A throwaway system user with no home and no login shell, removed afterwards."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("--run-as needs the tests to run as root on POSIX (to create a user and switch to it)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed, so no throwaway user can be made")
    name = f"pqrun{secrets.token_hex(4)}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if made.returncode != 0:
        pytest.skip(f"could not create a throwaway user: {made.stderr.strip()}")
    try:
        yield osdeps.lookup_run_as(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def _python_for(run_as: osdeps.RunAs) -> str:
    """A Python the throwaway user can run (the test's own may live under root's home, closed to it)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        path = Path(os.path.realpath(candidate))
        if path.is_file() and all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
            return str(path)
    pytest.skip("no Python on this machine that other users may run")


@contextlib.contextmanager
def _reachable_by_others(*paths: Path) -> Iterator[None]:
    """Let other users pass through the folders above `paths` for a while: a checkout may sit in a
    private temporary folder (mode 0700), which the throwaway user could not enter to read run.py."""
    changed: dict[Path, int] = {}
    for path in paths:
        for folder in path.resolve().parents:
            mode = folder.stat().st_mode
            if folder not in changed and not mode & 0o001:
                changed[folder] = mode
                folder.chmod(stat.S_IMODE(mode) | 0o001)
    try:
        yield
    finally:
        for folder, mode in changed.items():
            folder.chmod(stat.S_IMODE(mode))


def _refusal(
    *flags: str, env: dict[str, str] | None = None, python: list[str] | None = None, **popen: Any
) -> tuple[int, list[str]]:
    """Start run.py expecting it to refuse: (exit code, stderr lines)."""
    done = subprocess.run(
        [*(python or [sys.executable, str(ROOT / "run.py")]), "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        **popen,
    )
    return done.returncode, done.stderr.strip().splitlines()


def test_jobs_run_as_the_user_who_then_owns_their_directory_and_output(
    user: osdeps.RunAs, jobs_dir: Path, start_server: Any
) -> None:
    server = start_server("--run-as", user.name)
    python = _python_for(user)
    code = (
        "import json, os, sys\n"
        "open('made-by-job.txt', 'w').write('mine')\n"
        "tries = {}\n"
        "for name, path in (('root', '../escape.txt'), ('meta', 'meta.json')):\n"
        "    try:\n"
        "        open(path, 'a').close(); tries[name] = 'written'\n"
        "    except PermissionError:\n"
        "        tries[name] = 'refused'\n"
        "print('to the log', file=sys.stderr)\n"
        "print(json.dumps({'ids': [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()], 'tries': tries,\n"
        "    'home': os.environ.get('HOME'), 'user': os.environ.get('USER')}))\n"
    )
    job = server.submit([python, "-c", code])
    assert server.wait_status(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED", server.log()
    seen = json.loads(server.get(f"/jobs/{job['id']}/result").text)
    assert seen["ids"] == [user.uid, user.uid, user.gid, sorted(user.groups)]  # root's groups are dropped
    assert seen["tries"] == {"root": "refused", "meta": "refused"}
    assert (seen["home"], seen["user"]) == (user.home, user.name)
    job_dir = jobs_dir / job["id"]
    for path in (job_dir, job_dir / "stdout.txt", job_dir / "stderr.txt", job_dir / "made-by-job.txt"):
        assert (path.stat().st_uid, path.stat().st_gid) == (user.uid, user.gid), path
    for path in (jobs_dir, job_dir / "meta.json"):
        assert path.stat().st_uid == os.geteuid(), path
    assert not (jobs_dir / "escape.txt").exists()
    assert server.get(f"/jobs/{job['id']}/logs").text == "to the log\n"


def test_run_as_may_come_from_the_environment_or_the_config_file(
    user: osdeps.RunAs, tmp_path: Path, jobs_dir: Path, start_server: Any
) -> None:
    probe = [_python_for(user), "-c", "import os; print(os.getuid())"]
    server = start_server(env={"PROCQ_RUN_AS": str(user.uid)})  # a uid works as well as a name
    job = server.submit(probe)
    server.wait_status(job["id"], "COMPLETED")
    assert server.get(f"/jobs/{job['id']}/result").text == f"{user.uid}\n"
    server.stop()
    config = tmp_path / "procq.toml"
    config.write_text(f'run_as = "{user.name}"\n')
    server = start_server("--config", str(config))
    job = server.submit(probe)
    server.wait_status(job["id"], "COMPLETED")
    assert server.get(f"/jobs/{job['id']}/result").text == f"{user.uid}\n"


def test_an_unknown_user_is_refused_at_start_in_one_line(tmp_path: Path) -> None:
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("needs root: otherwise the refusal is about not being root")
    jobs = tmp_path / "jobs"
    for flags, env in (
        (("--run-as", "no-such-procq-user"), None),
        ((), {"PROCQ_RUN_AS": "no-such-procq-user"}),
    ):
        code, lines = _refusal("--jobs-dir", str(jobs), *flags, env=env)
        assert code == 2 and lines == ["procq: --run-as: there is no user 'no-such-procq-user' on this system"]
    assert not jobs.exists()  # refused before anything was made


def test_a_server_not_started_as_root_refuses_run_as_in_one_line(user: osdeps.RunAs) -> None:
    # The throwaway user starts the server itself (a Python it may run, with this checkout's packages);
    # it cannot switch to anyone.
    packages = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    launcher = (
        f"import site, sys, runpy; [site.addsitedir(p) for p in {packages!r}]; "
        f"sys.argv[0] = {str(ROOT / 'run.py')!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    python = [_python_for(user), "-c", launcher]
    flags = ("--jobs-dir", "/nonexistent/jobs", "--run-as", "root")
    with _reachable_by_others(ROOT, Path(sys.prefix)):
        code, lines = _refusal(*flags, python=python, user=user.uid, group=user.gid, extra_groups=[])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("procq: --run-as needs the server started as root") and "root" in lines[0]


def test_run_as_is_refused_on_windows_and_for_non_root_as_pure_logic() -> None:
    with pytest.raises(ValueError, match="POSIX only"):
        osdeps.lookup_run_as("builder", windows=True)
    with pytest.raises(ValueError, match=r"needs the server started as root .*uid 1000"):
        osdeps.lookup_run_as("builder", windows=False, euid=1000)
    assert osdeps.run_as_kwargs(None) == {}
    run_as = osdeps.RunAs("builder", 1200, 1300, (44,), "/home/builder")
    assert osdeps.run_as_kwargs(run_as) == {"user": 1200, "group": 1300, "extra_groups": [44]}
    assert run_as.env() == {"HOME": "/home/builder", "USER": "builder", "LOGNAME": "builder"}


def test_the_keeper_starts_a_run_as_the_user_named_in_the_spawn_request(user: osdeps.RunAs, tmp_path: Path) -> None:
    from procq.actors.keeper.client import KeeperClient, KeeperError
    from tests.test_keeper import _end_keeper

    jobs = tmp_path / "jobs"
    job_id = "0" * 31 + "c"
    (jobs / job_id).mkdir(parents=True)
    ended: dict[str, dict[str, Any]] = {}
    client = KeeperClient.ensure(jobs)
    try:
        client.follow(lambda record: ended.setdefault(record["run"], record), lambda: None)
        code = "import os; print(os.getuid(), os.getgid())"
        client.spawn(job_id, 1, [_python_for(user), "-c", code], dict(os.environ), run_as=user.name)
        record = wait_until(lambda: ended.get(f"{job_id}.1"))
        assert record["exit_code"] == 0
        assert (jobs / job_id / "stdout.txt").read_text() == f"{user.uid} {user.gid}\n"
        for path in (jobs / job_id, jobs / job_id / "stdout.txt", jobs / job_id / "stderr.txt"):
            assert path.stat().st_uid == user.uid, path
        assert jobs.stat().st_uid == os.geteuid()
        with pytest.raises(KeeperError, match="no user 'no-such-procq-user'"):
            client.spawn(job_id, 2, ["true"], dict(os.environ), run_as="no-such-procq-user")
    finally:
        client.close()
        _end_keeper(jobs)
