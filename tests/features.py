"""Set-up steps several test files share: the first admin key, and a submit that must be accepted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, ServerProcess, py


def create_admin_key(jobs_dir: Path) -> str:
    """The first admin key, made with `run.py keys` before the server starts."""
    made = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "keys",
            "--jobs-dir",
            str(jobs_dir),
            "create",
            "--name",
            "admin",
            "--scopes",
            "admin",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def require_submit_field(server: ServerProcess, field: str, value: object) -> None:
    """POST /jobs accepts `field` with `value` (the test that calls this relies on it)."""
    answer = server.post("/jobs", json={"args": py("pass"), field: value})
    assert answer.status_code == 201, answer.text
