"""Running procq's two command lines as a user does: `procq` (the console script's module) and `run.py`."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, ServerProcess


def procq(server: ServerProcess | None, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI to completion, its output captured (a pipe, as in `procq ls | grep`); the server URL
    comes from PROCQ_URL, as a user would set it."""
    environment = {**{k: v for k, v in os.environ.items() if k != "PROCQ_KEY"}, "COLUMNS": "200", **env}
    if server is not None:
        environment.setdefault("PROCQ_URL", server.url)
    return subprocess.run(
        [sys.executable, "-m", "procq.server.console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=environment,
    )


def run_py(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
