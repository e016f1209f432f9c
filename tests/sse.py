"""A small Server-Sent Events reader over a real streaming HTTP response, for tests."""

from __future__ import annotations

import json
from typing import Any

import requests


class EventReader:
    """Reads events one at a time from a `requests` response opened with stream=True. Reads are
    bounded by the response's read timeout; comments and `retry:` lines are skipped."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self._chunks = response.iter_content(chunk_size=None)
        self._buffer = b""

    def next(self) -> dict[str, Any] | None:
        """The next event as {"event", "id", "data" (parsed JSON)}, or None when the stream ended."""
        while True:
            while b"\n\n" not in self._buffer:
                try:
                    self._buffer += next(self._chunks)
                except StopIteration:
                    return None
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            fields: dict[str, Any] = {}
            for line in block.decode("utf-8").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                fields.setdefault("event", "message")
                return fields

    def close(self) -> None:
        self.response.close()


def open_stream(url: str, headers: dict[str, str] | None = None, read_timeout: float = 20.0) -> EventReader:
    response = requests.get(
        url, headers={"Accept": "text/event-stream", **(headers or {})}, stream=True, timeout=(5, read_timeout)
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return EventReader(response)
