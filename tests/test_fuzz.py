"""Fuzz the API of a real server from its own OpenAPI document with schemathesis: no 5xx, every
response as documented, the server healthy after.

Bounded here (a few examples per operation). The longer run, documented in SECURITY.md:
    FUZZ_EXAMPLES=300 FUZZ_PHASES=examples,coverage,fuzzing,stateful pytest tests/test_fuzz.py -s
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.secure_helpers import bearer, make_key

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
PHASES = os.environ.get("FUZZ_PHASES", "coverage,fuzzing")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",  # schemathesis also calls each operation without the key and expects a refusal
    ]
)

pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'")


@pytest.mark.timeout(120 + EXAMPLES * 5)
def test_fuzzing_the_documented_api_finds_no_server_error(tmp_path: Path, jobs_dir: Path, start_server: Any) -> None:
    # Safety first: fuzzed jobs must never run a real program or call a fuzzed webhook URL, so the
    # only command allowed is a file with a name no fuzzer will produce. Submissions get 403 (documented).
    only = tmp_path / "procq-fuzz-allowed-only"
    only.write_text("#!/bin/sh\n")
    only.chmod(0o755)
    _, key = make_key(jobs_dir, "admin", name="fuzz")
    server = start_server("--allow-command", str(only), "--webhook-deny-private")
    response = server.post("/jobs", json={"args": [str(only)]}, headers=bearer(key))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]  # so the /jobs/{job_id}/... operations reach a real job, not only 404s
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'headers = {{ Authorization = "Bearer {key}" }}\n\n[parameters]\n"path.job_id" = "{job_id}"\n',
        encoding="utf-8",
    )
    cmd = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        PHASES,
        "--max-examples",
        str(EXAMPLES),
        "--exclude-path",
        "/events",  # an endless stream by design; tests/test_watch_server.py covers it
        "--workers",
        "2",
        "--seed",
        os.environ.get("FUZZ_SEED", "20261123"),
        "--suppress-health-check",
        "too_slow",  # generating bodies is slow on a loaded machine; that is no fault of the server
        "--request-timeout",
        "5",  # an answer takes milliseconds; a longer wait only slows the run down
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=110 + EXAMPLES * 5, cwd=tmp_path)
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout.split("SUMMARY")[-1]
    print(run.stdout[-1500:])  # shown with -s: phases, timings, warnings
    assert server.get("/health").status_code == 200
    assert server.stop() == 0
    log = server.log()
    # (pykka logs a traceback at INFO for every JobNotFound it hands back: that is not a failure)
    errors = [line for line in log.splitlines() if " ERROR " in line or "unexpected error" in line]
    assert errors == [], errors[:5]
