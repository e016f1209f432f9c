"""GET /jobs/{id}/logs: a job's output from a byte offset, or followed live as Server-Sent Events."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import falcon
import pykka

from procq.actors import osdeps
from procq.actors.errors import JobNotFound, NotRegularFile, ProcqError, StorageError
from procq.actors.events import EventHub
from procq.actors.job import Job, is_job_id
from procq.api import sse, strictjson
from procq.api.ask import ask
from procq.api.parse import parse_query
from procq.api.relay import Relay

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy

log = logging.getLogger("procq.api.logs")

CHUNK_BYTES = 64 * 1024  # most bytes one event carries
POLL_S = 0.1  # how late a follower may see new output


class LogsResource:
    """Plain mode streams the file's bytes from `offset` (as they are at the request). Follow mode
    polls the file (open, read a chunk, close: Windows must be able to rotate or delete it) and
    learns of the job's end from the EventHub, so a follower never asks the Dispatcher while it waits."""

    def __init__(
        self,
        dispatcher: DispatcherProxy,
        jobs_dir: Path,
        hub: EventHub,
        slots: sse.StreamSlots,
        relay: Relay | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._jobs_dir = jobs_dir
        self._hub = hub
        self._slots = slots
        self._relay = relay  # cluster mode: another node's jobs

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        query = parse_query(req, "stream", "offset", "follow")
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        path = self._jobs_dir / job_id / f"{query['stream']}.txt"
        read = functools.partial(_read, path)
        if self._relay is not None and self._elsewhere(req, resp, job_id, query):
            return
        if not (query["follow"] or sse.wants_stream(req)):
            self._get(job_id)  # 404 for an unknown job
            handle, size = _open(path, job_id)
            start = min(query["offset"], size)
            resp.content_type = falcon.MEDIA_TEXT
            resp.set_header("X-Next-Offset", str(size))
            if handle is None or size <= start:
                if handle is not None:
                    handle.close()
                resp.content_length = 0
                return
            handle.seek(start)
            # The open handle is what is measured and what is sent: a file swapped meanwhile changes neither.
            resp.set_stream(_FileSlice(handle, size - start), size - start)
            return
        offset = _last_event_id(req, query["offset"])
        end = self._hub.end_of(job_id)  # before reading the state, so an end in between is not missed
        job = self._get(job_id)
        if job.status.terminal:
            end.set()
        gone = sse.client_gone(req)
        sse.start(resp, self._slots, lambda: self._follow(job, read, offset, end, gone), gone=gone)

    def _elsewhere(self, req: falcon.Request, resp: falcon.Response, job_id: str, query: dict[str, Any]) -> bool:
        """Cluster mode: answer for a job whose files another node holds (True), from the copy kept in
        the database once it finished, else through that node (api/relay.py)."""
        assert self._relay is not None
        job = self._get(job_id)
        if self._relay.holder(req, job) is None:
            return False
        kept = self._relay.kept(job, query["stream"])
        if kept is None:
            self._relay.forward(req, resp, job, f"/jobs/{job_id}/logs", query)
            return True
        if not (query["follow"] or sse.wants_stream(req)):
            start = min(query["offset"], len(kept))
            resp.content_type = falcon.MEDIA_TEXT
            resp.set_header("X-Next-Offset", str(len(kept)))
            resp.data = kept[start:]
            return True
        ended = threading.Event()
        ended.set()
        offset = _last_event_id(req, query["offset"])
        read = functools.partial(_slice, kept)
        sse.start(resp, self._slots, lambda: self._follow(job, read, offset, ended, lambda: False))
        return True

    def _follow(
        self,
        job: Job,
        read: Callable[[int, int], bytes],
        offset: int,
        end: threading.Event,
        gone: Callable[[], bool],
    ) -> Iterator[bytes]:
        yield b"retry: 1000\n\n"  # sent at once: the client knows it is connected
        quiet_since = time.monotonic()
        while True:
            ended = end.is_set()  # checked before reading: output written before the end is then read
            chunk = read(offset, CHUNK_BYTES)
            last = ended and len(chunk) < CHUNK_BYTES
            cut = len(chunk) if last else utf8_prefix(chunk)
            if cut:
                offset += cut
                yield sse.event("log", chunk[:cut].decode("utf-8", "replace"), str(offset))
                quiet_since = time.monotonic()
                if len(chunk) == CHUNK_BYTES:
                    continue  # more is waiting
            if last:
                break
            if self._hub.closing.is_set() or gone():
                return  # shutdown (no end event: the client reconnects to the next server) or hung up
            if time.monotonic() - quiet_since >= sse.HEARTBEAT_S:
                yield sse.comment("waiting for output")
                quiet_since = time.monotonic()
            end.wait(POLL_S)
        yield sse.event("end", self._final(job).to_dict())

    def _final(self, job: Job) -> Job:
        try:
            return self._get(job.id)
        except (ProcqError, pykka.Timeout, pykka.ActorDeadError) as exc:
            log.warning("job %s: final state unavailable for a log follower: %s", job.id, exc)
            return job

    def _get(self, job_id: str) -> Job:
        return ask(self._dispatcher.get(job_id))


def utf8_prefix(data: bytes) -> int:
    """The length of the longest prefix of `data` that does not end inside a UTF-8 character, so
    an event never splits one (the rest is sent with the next chunk)."""
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for its lead byte
        if byte < 0xC0 or byte >= 0xF8:
            return size  # ASCII (complete), or a byte no UTF-8 text has
        needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return size - back if back < needed else size
    return size  # not UTF-8 at all: send it as it is (decoded with replacement characters)


def _last_event_id(req: falcon.Request, offset: int) -> int:
    value = req.get_header("Last-Event-ID")
    if value is None:
        return offset
    parsed = strictjson.parse_decimal(value)
    if parsed is None:
        raise falcon.HTTPBadRequest(
            title="Invalid Last-Event-ID",
            description=f"Last-Event-ID must be the id of an earlier log event (a byte offset); got {value[:40]!r}",
        )
    return parsed


def _open(path: Path, job_id: str) -> tuple[BinaryIO | None, int]:
    """The log file opened for one plain read, with its size; (None, 0) before the job has started.
    A symlink or special file the job put in its place is refused (409), never followed."""
    try:
        handle = osdeps.open_inside(path, path.parent.parent)
    except FileNotFoundError:
        return None, 0
    except osdeps.NotARegularFile as exc:
        raise NotRegularFile(job_id, path.name) from exc
    except OSError as exc:
        raise StorageError("open the job's log", exc) from exc
    return handle, os.fstat(handle.fileno()).st_size


def _slice(data: bytes, offset: int, limit: int) -> bytes:
    return data[offset : offset + limit]


def _read(path: Path, offset: int, limit: int) -> bytes:
    """One short-lived handle per poll (Windows must be able to replace or delete the file); a file not there
    yet reads as empty."""
    try:
        # jobs/<id>/<stream>.txt: a symlink planted there or on the job's directory is refused
        with osdeps.open_inside(path, path.parent.parent) as handle:
            handle.seek(offset)
            return handle.read(limit)
    except FileNotFoundError:
        return b""
    except OSError as exc:  # e.g. a Windows sharing violation while the file is swapped: next poll
        log.debug("reading %s: %s", path, exc)
        return b""


class _FileSlice:
    """`length` bytes of an open file from its position, read in chunks and closed at the end. If the
    file shrank meanwhile (a rerun truncates it), the body ends short and waitress closes the
    connection, so the client sees a cut answer rather than a wrong one."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def __iter__(self) -> _FileSlice:
        return self

    def __next__(self) -> bytes:
        chunk = self._handle.read(min(CHUNK_BYTES, self._left)) if self._left > 0 else b""
        if not chunk:
            self.close()
            raise StopIteration
        self._left -= len(chunk)
        return chunk

    def close(self) -> None:  # called by the WSGI server when the client goes early
        self._handle.close()
