"""Small leaks closed: answers that told too much or left files behind."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from procq.actors.supervise.spawn import resolve_cwd
from tests.helpers import py


def test_cwd_errors_do_not_tell_whether_a_path_outside_the_root_exists(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "exists-outside").mkdir()
    messages = []
    for cwd in ("../exists-outside", "../missing-outside", str(tmp_path / "exists-outside"), "missing"):
        with pytest.raises(ValueError) as refused:
            resolve_cwd(root, cwd)
        messages.append(str(refused.value).replace(repr(cwd), "CWD"))
    assert len(set(messages)) == 1, messages
    assert resolve_cwd(root, "inside") == (root / "inside").resolve()


def test_a_health_probe_that_fails_to_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from procq.api.health import HealthResource

    def full_disk(self: Path, data: bytes) -> int:
        self.touch()  # the file is created, then the write fails: what a full disk does
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert "not writable" in HealthResource(None, tmp_path)._jobs_dir_check()
    assert list(tmp_path.iterdir()) == []


def _raw_get(url: str, path: str) -> tuple[int, int | None, bytes]:
    """(status, Content-Length, the body bytes really sent) of one request on its own connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = headers.get("Content-Length")
    return int(lines[0].split()[1]), int(length) if length is not None else None, body


def test_a_log_the_job_replaced_by_a_symlink_is_refused_and_lengths_always_match(
    tmp_path: Path, start_server: Any
) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("OUTSIDE-THE-JOB-DIRECTORY " * 40)
    # The job itself swaps its log and its result for links out of its directory (a FIFO too).
    code = (
        "import os, sys; print('real output', flush=True); print('real log', file=sys.stderr, flush=True); "
        f"os.remove('stderr.txt'); os.symlink({str(secret)!r}, 'stderr.txt'); "
        f"os.remove('stdout.txt'); os.symlink({str(secret)!r}, 'stdout.txt')"
    )
    server = start_server()
    job = server.submit(py(code))
    assert server.wait_status(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED"
    for path in (
        f"/jobs/{job['id']}/logs",
        f"/jobs/{job['id']}/logs?stream=stdout",
        f"/jobs/{job['id']}/logs?offset=3",
        f"/jobs/{job['id']}/result",
    ):
        status, length, body = _raw_get(server.url, path)
        assert status == 409, (path, status, body)
        assert length == len(body), (path, length, len(body))
        answer = json.loads(body)
        assert answer["title"] == "Not a regular file" and "not a regular file" in answer["description"]
        assert b"OUTSIDE" not in body
    # A regular log still answers with exactly the bytes it announces.
    plain = server.submit(py("import sys; print('x' * 70000, file=sys.stderr)"))
    server.wait_status(plain["id"], "COMPLETED")
    for offset in (0, 5, 70001, 99999):
        status, length, body = _raw_get(server.url, f"/jobs/{plain['id']}/logs?offset={offset}")
        assert status == 200 and length == len(body) == max(0, 70001 - offset), (offset, length, len(body))


def test_a_fifo_planted_as_a_log_is_refused_without_hanging(tmp_path: Path, start_server: Any) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    server = start_server()
    job = server.submit(py("import os; os.remove('stderr.txt'); os.mkfifo('stderr.txt')"))
    assert server.wait_status(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED"
    status, length, body = _raw_get(server.url, f"/jobs/{job['id']}/logs")
    assert status == 409 and length == len(body), (status, body)
