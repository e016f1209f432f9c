"""Server-sent events: parse a streaming requests.Response into (event, id, data) records."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Event:
    """One server-sent event. `event` defaults to "message"; `id` is None when the event had none."""

    event: str
    data: str
    id: str | None = None


def iter_events(response: requests.Response) -> Iterator[Event]:
    """Yield events as they arrive on `response` (opened with stream=True). Comments (heartbeats) are
    skipped. Returns when the server closes the stream; a dropped connection raises requests' errors."""
    buffer = ""
    # Incremental, so a UTF-8 character split across two network chunks is decoded whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # chunk_size=None hands over each chunk as it arrives; a fixed size would wait for that many bytes.
    for chunk in response.iter_content(chunk_size=None):
        buffer += decoder.decode(chunk)
        # A CR at the end may be the first half of a CRLF split across chunks: keep it raw until the next one.
        held = "\r" if buffer.endswith("\r") else ""
        buffer = buffer[: len(buffer) - len(held)].replace("\r\n", "\n").replace("\r", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = _parse(block)
            if event is not None:
                yield event
        buffer += held


def _parse(block: str) -> Event | None:
    name, data, event_id = "message", [], None
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            event_id = value
    if not data and name == "message":
        return None  # a block of comments only: a heartbeat
    return Event(name, "\n".join(data), event_id)
