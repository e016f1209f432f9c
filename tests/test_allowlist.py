"""--allow-command pairs with an environment allow-list (--allow-env), and the refusal of batch files
on Windows looks at the file that will actually run (after PATHEXT), as pure logic."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from procq.actors.errors import CommandNotAllowed, VariableNotAllowed
from procq.api.commands import CommandPolicy
from tests.helpers import py

# Each makes some program load or run other code; a deny-list missed them all once.
INJECTING = ["OPENSSL_CONF", "LUA_INIT", "PHPRC", "CLASSPATH", "GLIBC_TUNABLES", "HOME", "XDG_CONFIG_HOME",
             "GTK_MODULES", "LD_PRELOAD", "PYTHONSTARTUP", "RENDER_QUALITY"]  # fmt: skip


@pytest.mark.parametrize("name", INJECTING)
def test_without_allow_env_a_job_may_set_no_variable_at_all(name: str) -> None:
    with pytest.raises(VariableNotAllowed) as refused:
        CommandPolicy([sys.executable]).check((sys.executable, "-V"), [name])
    assert repr(name) in str(refused.value) and "--allow-env" in str(refused.value)


def test_allow_env_patterns_admit_only_what_they_name() -> None:
    policy = CommandPolicy([sys.executable], allowed_env=["RENDER_*", "LANG"])
    assert policy.check((sys.executable,), ["RENDER_QUALITY", "render_size", "LANG"])[0] == sys.executable
    for name in ("RENDER", "LANGUAGE", "OPENSSL_CONF", "HOME"):
        with pytest.raises(VariableNotAllowed):
            policy.check((sys.executable,), [name])


def test_a_broad_pattern_does_not_admit_a_known_injecting_variable_unless_named_exactly() -> None:
    assert not CommandPolicy([sys.executable], allowed_env=["*"]).env_allowed("LD_PRELOAD")
    assert CommandPolicy([sys.executable], allowed_env=["*"]).env_allowed("OPENSSL_CONF")  # the operator's choice
    assert CommandPolicy([sys.executable], allowed_env=["LD_PRELOAD"]).env_allowed("LD_PRELOAD")


def test_the_server_applies_allow_env(start_server: Any) -> None:
    server = start_server("--allow-command", sys.executable, "--allow-env", "RENDER_*")
    job = server.submit(py("import os; print(os.environ['RENDER_Q'])"), env={"RENDER_Q": "high"})
    assert server.wait_status(job["id"], "COMPLETED")
    response = server.post("/jobs", json={"args": py("pass"), "env": {"OPENSSL_CONF": "/tmp/evil.cnf"}})
    assert response.status_code == 403 and "OPENSSL_CONF" in response.json()["description"]
    assert server.stop() == 0


def _windows_policy(tmp_path: Path, *files: str) -> CommandPolicy:
    for name in files:
        (tmp_path / name).write_text("@echo off\n")
    return CommandPolicy(["npm"], environ={"PATH": str(tmp_path), "PATHEXT": ".COM;.EXE;.BAT;.CMD"}, windows=True)


def test_on_windows_an_allowed_name_that_resolves_to_a_batch_file_is_refused(tmp_path: Path) -> None:
    policy = _windows_policy(tmp_path, "npm.CMD")
    with pytest.raises(CommandNotAllowed) as refused:
        policy.check(("npm", "install", "&", "calc"))
    assert "npm.CMD" in str(refused.value) and "batch" in str(refused.value)


def test_on_windows_an_allowed_name_that_resolves_to_an_exe_runs_that_file(tmp_path: Path) -> None:
    policy = _windows_policy(tmp_path, "npm.EXE")
    assert policy.check(("npm", "-v")) == (str(tmp_path / "npm.EXE"), "-v")
