"""Following a job over Server-Sent Events: Client.wait and logs(follow=True), with reconnects and deadlines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import requests

from procq.client.errors import ConnectionFailed, JobNotFound, NotFound, Unavailable, WaitTimeout
from procq.client.job import Job
from procq.client.sse import iter_events

EVENTS_IDLE_S = 45.0  # the server sends a heartbeat every 15 s; three missed ones mean the stream is dead
LOG_RECONNECTS = 20  # reconnects in a row without a new chunk before logs(follow=True) gives up
STREAM_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class Following:
    """The part of Client that follows jobs as they change. A mixin: it uses Client's requests."""

    _timeout: tuple[float, float]
    _backoff_s: float

    if TYPE_CHECKING:

        def status(self, job_id: str) -> Job: ...

        def _request(
            self, method: str, path: str, *, stream: bool = False, timeout: Any = None, **kw: Any
        ) -> requests.Response: ...

    def wait(self, job_id: str, timeout: float | None = None, on_change: Callable[[Job], None] | None = None) -> Job:
        """Block until the job is COMPLETED, FAILED or CANCELED and return it. Follows GET /events (no
        busy polling), reconnecting if the stream drops; polls with backoff only when the server has no
        /events or no stream to spare. `on_change` is called with the job each time its state changes
        (and once at first). Raises WaitTimeout after `timeout` seconds, JobNotFound for an unknown id."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: list[str] = []

        def check() -> Job:
            job = self.status(job_id)
            if on_change is not None and (not seen or seen[-1] != job.status):
                on_change(job)
            seen.append(job.status)
            return job

        while True:
            remaining = _remaining(deadline)
            try:
                events = self._request(
                    "GET",
                    "/events",
                    stream=True,
                    headers={"Accept": "text/event-stream"},
                    timeout=(
                        self._timeout[0],
                        (EVENTS_IDLE_S if remaining is None else min(remaining, EVENTS_IDLE_S)) + 0.1,
                    ),
                )
            except (NotFound, Unavailable):  # no /events here, or every stream slot taken: poll instead
                return self._poll(job_id, deadline, check)
            except ConnectionFailed:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(min(1.0, remaining or 1.0))
                continue
            with events:
                job = check()  # after subscribing, so a change between the two is not missed
                if job.terminal:
                    return job
                try:
                    for event in iter_events(events):
                        if event.event == "job" and _event_job_id(event.data) == job_id:
                            job = check()
                            if job.terminal:
                                return job
                        self._raise_if_late(job_id, deadline, job)
                except STREAM_ERRORS:
                    pass  # dropped or idle past the read timeout: check the deadline, then reconnect
            self._raise_if_late(job_id, deadline, job)

    def _raise_if_late(self, job_id: str, deadline: float | None, job: Job) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"job {job_id} is still {job.status}", job)

    def _poll(self, job_id: str, deadline: float | None, check: Callable[[], Job]) -> Job:
        delay = 0.1
        while True:
            job = check()
            if job.terminal:
                return job
            self._raise_if_late(job_id, deadline, job)
            time.sleep(min(delay, _remaining(deadline) or delay))
            delay = min(delay * 2, 2.0)

    def _open_log_stream(self, job_id: str, params: dict[str, Any], last_id: str | None) -> requests.Response:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        return self._request(
            "GET",
            f"/jobs/{job_id}/logs",
            params={**params, "follow": 1},
            headers=headers,
            stream=True,
            timeout=(self._timeout[0], EVENTS_IDLE_S),
        )

    def _follow_logs(self, job_id: str, params: dict[str, Any], response: requests.Response) -> Iterator[str]:
        last_id: str | None = None
        idle_reconnects = 0
        while True:
            try:
                with response:
                    for event in iter_events(response):
                        if event.event == "end":
                            return
                        if event.event == "log":
                            last_id = event.id or last_id
                            idle_reconnects = 0
                            yield json.loads(event.data)
            except STREAM_ERRORS:
                pass  # dropped, or idle past the read timeout (a quiet job): resume after the last chunk
            idle_reconnects += 1
            if idle_reconnects > LOG_RECONNECTS:
                raise ConnectionFailed(f"the log stream of job {job_id} keeps closing without its end event")
            time.sleep(min(self._backoff_s * 2**idle_reconnects, 2.0))
            try:
                response = self._open_log_stream(job_id, params, last_id)
            except JobNotFound:
                return  # deleted while we followed it


def _event_job_id(data: str) -> str | None:
    try:
        return json.loads(data).get("id")
    except (ValueError, AttributeError):
        return None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
