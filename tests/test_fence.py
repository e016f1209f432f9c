"""The AST fence keeps OS-specific code in actors/osdeps/, however it is spelled (tests/fence.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fence import violations
from tests.helpers import ROOT

# Each line is one way to reach an OS-specific call; the fence must flag every one of them.
PROBES = [
    "import os as o\no.killpg(1, 9)",
    "from os import kill\nkill(1, 9)",
    "from os import kill as k\nk(1, 9)",
    "from signal import *",
    "import signal as s\ns.SIGKILL",
    "import os\ngetattr(os, 'killpg')(1, 9)",
    "import os\ngetattr(os, 'set' + 'sid')()",
    "import os\nos.system('id')",
    "import os\nos.execvp('sh', ['sh'])",
    "import os\nos.posix_spawn('/bin/sh', [], {})",
    "import os\nos.spawnlp(0, 'sh', 'sh')",
    "import os\nos.wait4(1, 0)",
    "import os\nos.waitpid(1, 0)",
    "import os\nos.getuid()",
    "import os\nos.nice(1)",
    "import os\nos.sched_setaffinity(0, {0})",
    "import os\nos.fork()",
    "import sys\nif sys.platform == 'win32':\n    pass",
    "from sys import platform",
    "import os\nWINDOWS = os.name == 'nt'",
    "import platform\nplatform.system()",
    "import platform as p\np.uname()",
    "x = open('/proc/self/environ')",
    "x = f'/proc/{1}/status'",
    "import ctypes",
    "from ctypes import CDLL",
    "import ctypes.util",
    "import fcntl",
    "import pwd",
    "import pty",
    "import win32api",
    "from _winapi import CreateProcess",
    "__import__('resource')",
    "import importlib\nimportlib.import_module('grp')",
    "import subprocess\nsubprocess.Popen([], start_new_session=True)",
    "import subprocess\nsubprocess.run([], preexec_fn=print)",
    "import subprocess\nsubprocess.Popen([], creationflags=8)",
    "import subprocess\nsubprocess.run('id', shell=True)",
    "import subprocess\nsubprocess.Popen([], user='nobody')",
    "import subprocess\nsubprocess.Popen([], pass_fds=(3,))",
]
HARMLESS = [
    '"""Docstrings may talk about /proc and os.kill."""',
    "import os\nos.path.join('a', 'b')",
    "import os\nos.environ.get('X')",
    "x = '/process/a'",
    "import subprocess\nsubprocess.run([], shell=False)",
    "# os.killpg(1, 9) in a comment",
    "import sys\nsys.executable",
]


@pytest.mark.parametrize("source", PROBES)
def test_the_fence_flags_every_spelling_of_an_os_specific_call(tmp_path: Path, source: str) -> None:
    probe = tmp_path / "probe.py"  # a temporary directory, never the source tree
    probe.write_text(source + "\n", encoding="utf-8")
    assert violations(probe), f"not flagged:\n{source}"


def test_all_probes_in_one_file_give_a_finding_each(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("\n".join(f"def case_{i}():\n" + _indent(s) for i, s in enumerate(PROBES)) + "\n")
    lines = {int(v.split(":")[0]) for v in violations(probe)}
    missed, line = [], 1  # each case: its def line, its body, a blank line
    for source in PROBES:
        body = range(line + 1, line + 2 + source.count("\n"))
        if not lines.intersection(body):
            missed.append(source)
        line = body.stop + 1
    assert missed == [] and len(PROBES) >= 20


@pytest.mark.parametrize("source", HARMLESS)
def test_the_fence_leaves_portable_code_alone(tmp_path: Path, source: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source + "\n", encoding="utf-8")
    assert violations(probe) == []


def test_os_specific_code_lives_only_in_osdeps() -> None:
    skip = {".venv", ".git", "node_modules", "build", "tests", "bench"}  # build/: what building the wheel leaves
    checked = [
        p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts) and p.parent != ROOT / "actors" / "osdeps"
    ]
    assert any(p.name == "supervisor.py" for p in checked)  # the fence really looks at the server's code
    rooms = {p.parent.relative_to(ROOT).as_posix() for p in checked}  # ...in every room
    assert {"actors", "actors/dispatch", "actors/supervise", "server", "api", "client"} <= rooms
    found = [f"{p.relative_to(ROOT)}:{v}" for p in checked for v in violations(p)]
    assert found == []


def test_the_fence_tests_write_nothing_into_the_source_tree() -> None:
    assert not list((ROOT / "tests").glob("_fence_probe*"))


def _indent(source: str) -> str:
    return "".join(f"    {line}\n" for line in source.splitlines())
