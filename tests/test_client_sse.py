"""The client's SSE reader: events come out whole however the network cuts the stream into chunks."""

from __future__ import annotations

from collections.abc import Iterator

from procq.client.sse import Event, iter_events

STREAM = (
    ": connected\r\n\r\n"
    'id: 7\r\nevent: log\r\ndata: "h\\u00e9llo"\r\n\r\n'
    "retry: 1000\n\n"
    'event: job\ndata: {"id": "a",\ndata:  "status": "IN_QUEUE"}\n\n'
    "data: plain ünïcödé\r\r"
    ": heartbeat\n\n"
    'event: end\ndata: {"id": "a"}\n\n'
).encode()
EXPECTED = [
    Event("log", '"h\\u00e9llo"', "7"),
    Event("job", '{"id": "a",\n "status": "IN_QUEUE"}'),
    Event("message", "plain ünïcödé"),
    Event("end", '{"id": "a"}'),
]


class Chunks:
    """What iter_events reads: a response whose body arrives in the given pieces."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = pieces

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        yield from self._pieces


def test_events_are_parsed_from_one_chunk() -> None:
    assert list(iter_events(Chunks(STREAM))) == EXPECTED  # type: ignore[arg-type]


def test_events_come_out_whole_wherever_the_stream_is_split() -> None:
    for cut in range(1, len(STREAM)):  # inside CRLFs, inside multi-byte characters, inside field names
        pieces = Chunks(STREAM[:cut], STREAM[cut:])
        assert list(iter_events(pieces)) == EXPECTED, cut  # type: ignore[arg-type]


def test_byte_by_byte_arrival_gives_the_same_events() -> None:
    pieces = Chunks(*(STREAM[i : i + 1] for i in range(len(STREAM))))
    assert list(iter_events(pieces)) == EXPECTED  # type: ignore[arg-type]
