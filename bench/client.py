"""A lean keep-alive HTTP client (http.client), so the bench spends as little CPU as it can per request."""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime
from typing import Any


class Client:
    """One persistent connection; not thread-safe (one per client thread). Reconnects once on a
    dropped keep-alive connection; any other connection error is raised (the chaos harness counts them)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30) -> None:
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2 or method == "POST":  # a POST may have been taken: never resend it blindly
                    raise
        raise AssertionError("unreachable")

    def stream(self, path: str) -> http.client.HTTPResponse:
        """Start a GET and return the response to read from (the caller reads it to the end)."""
        self.close()
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        self._conn.request("GET", path)
        return self._conn.getresponse()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, data = self.request(method, path, body)
        return status, json.loads(data) if data else None

    def submit(self, args: list[str]) -> dict[str, Any]:
        status, job = self.json("POST", "/jobs", {"args": args})
        if status != 201:
            raise RuntimeError(f"POST /jobs answered {status}: {job}")
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        status, job = self.json("GET", f"/jobs/{job_id}/status")
        if status != 200:
            raise RuntimeError(f"GET /jobs/{job_id}/status answered {status}: {job}")
        return job


TERMINAL = ("COMPLETED", "FAILED", "CANCELED")


def epoch(stamp: str) -> float:
    """An API timestamp (RFC 3339, Z) as seconds since the epoch, comparable with time.time()."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
