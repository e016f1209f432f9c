"""Secrets stay out of every environment: the server's (os.environ and /proc/<pid>/environ) and its
jobs'; a secret may come from a file instead."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from procq.actors import osdeps
from tests.helpers import py
from tests.test_webhook_security import SECRET, VerifyingReceiver, delivery

PEEK = """
import os, sys
print("env:", os.environ.get("PROCQ_WEBHOOK_SECRET"))
for pid in (os.getppid(), int(sys.argv[1])):
    try:
        print("proc:", open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
    except OSError as exc:
        print("proc: unreadable", exc)
"""


def test_a_job_finds_the_webhook_secret_neither_in_its_environment_nor_in_the_servers(start_server: Any) -> None:
    receiver = VerifyingReceiver(SECRET)
    try:
        server = start_server(env={"PROCQ_WEBHOOK_SECRET": SECRET})
        job = server.submit([*py(PEEK), str(server.proc.pid)], webhook=receiver.url)
        assert delivery(server, job["id"], "delivered")["status"] == "COMPLETED"
        output = server.get(f"/jobs/{job['id']}/result").text
        assert "env: None" in output and "proc:" in output
        assert SECRET not in output and SECRET.removeprefix("whsec_") not in output
        if sys.platform.startswith("linux"):
            assert SECRET.encode() not in Path(f"/proc/{server.proc.pid}/environ").read_bytes()
        assert len(receiver.verified) == 1  # the server still signs with it
        assert server.stop() == 0
    finally:
        receiver.close()


def test_the_webhook_secret_can_come_from_a_file(start_server: Any, tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    receiver = VerifyingReceiver(SECRET)
    try:
        server = start_server("--webhook-secret-file", str(secret_file))
        job = server.submit(py("pass"), webhook=receiver.url)
        assert delivery(server, job["id"], "delivered")["webhook_delivery"]["attempts"] == 1
        assert len(receiver.verified) == 1 and receiver.rejected == 0
        assert SECRET not in " ".join(server.proc.args)  # type: ignore[arg-type]
        assert server.stop() == 0
    finally:
        receiver.close()


def test_on_windows_secrets_are_only_taken_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCQ_WEBHOOK_SECRET", "s3cret")
    monkeypatch.delenv(osdeps.SECRETS_FD, raising=False)
    assert osdeps.take_secrets(("PROCQ_WEBHOOK_SECRET", "PROCQ_OTHER"), windows=True) == {
        "PROCQ_WEBHOOK_SECRET": "s3cret"
    }
    assert "PROCQ_WEBHOOK_SECRET" not in os.environ
    assert osdeps.take_secrets(("PROCQ_WEBHOOK_SECRET",), windows=False) == {}  # nothing set: no re-exec
