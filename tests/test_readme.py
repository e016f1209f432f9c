"""The README read top to bottom: every curl and procq example runs as written, in the order written,
against a real server on a free loopback port (the examples' port 8080 is replaced by that port).

A block is left out only when an HTML comment right above it says why (`<!-- not run: ... -->`): the
ones that start servers, install packages or run for minutes. Everything else runs in one bash
session, so a variable set by one example (ID=...) is there for the next."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, ServerProcess

README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]*) -->\n)?```(?P<lang>sh|console)\n(?P<body>.*?)```", re.S)


def runnable_blocks(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(lang, body) to run], [reasons given for the blocks left out])."""
    run, skipped = [], []
    for match in BLOCK.finditer(text):
        if match["why"]:
            skipped.append(match["why"])
        else:
            run.append((match["lang"], match["body"]))
    return run, skipped


def script_of(lang: str, body: str) -> str:
    """A console block's commands are its `$ ` lines; a sh block is a script as it stands."""
    if lang == "console":
        return "\n".join(line[2:] for line in body.splitlines() if line.startswith("$ "))
    return body


def test_every_readme_example_runs_as_written_against_a_real_server(start_server, tmp_path: Path) -> None:
    server: ServerProcess = start_server()
    port = server.url.rsplit(":", 1)[1]
    blocks, skipped = runnable_blocks(README.read_text())
    assert len(blocks) >= 5 and len(skipped) <= 6, (len(blocks), skipped)
    bin_dir = Path(sys.executable).parent  # the virtualenv's procq and python3, as after `pip install -e .`
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '### example {n}' >&2\n{script_of(lang, body)}" for n, (lang, body) in enumerate(blocks, 1)
    )
    script = script.replace(":8080", f":{port}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROCQ_")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PROCQ_URL": server.url,
    }
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nserver:\n{server.log()[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr
