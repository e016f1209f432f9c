"""Client: procq's HTTP API as Python calls, with timeouts, safe retries and typed errors."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from procq.client.batch import Batching
from procq.client.errors import ConnectionFailed, error_for
from procq.client.follow import STREAM_ERRORS, Following
from procq.client.job import ApiKey, Job
from procq.client.sse import iter_events

DEFAULT_URL = "http://127.0.0.1:8080"
"""Where Client and the CLI look for the server unless told otherwise (the server's own default)."""


class Client(Following, Batching):
    """A procq server seen from Python. Every method blocks until the server answers (bounded by
    `timeout`, in seconds per read) and raises a ProcqError subclass on an error answer.

    GET, PUT and DELETE are retried on connection errors, 502, 504 and 503 with Retry-After; submit is
    retried the same way with one Idempotency-Key per call, so a retry never makes a second job.
    Use it as a context manager, or call close(), to release its connections.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = (connect_timeout, timeout)
        self._retries = retries
        self._backoff_s = backoff_s
        self._session = requests.Session()
        retry = Retry(
            total=retries,
            backoff_factor=backoff_s,
            # 503 only with Retry-After (busy, shutting down): a bare 503 from PUT cancel means "still
            # stopping", and repeating the cancel would turn a success into a 409.
            status_forcelist=(502, 504),
            respect_retry_after_header=True,
            allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
            raise_on_status=False,  # hand back the last answer, so its JSON error becomes the exception
        )
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._session.headers["User-Agent"] = "procq-client"
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections. The client must not be used afterwards."""
        self._session.close()

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(
        self,
        args: Iterable[str],
        *,
        mime_type: str | None = None,
        webhook: str | None = None,
        priority: int | None = None,
        queue: str | None = None,
        delay_seconds: float | None = None,
        timeout_seconds: float | None = None,
        tags: Iterable[str] | None = None,
        **fields: Any,
    ) -> Job:
        """Submit a job running `args` (no shell) and return it as the server created it. Only the
        options given are sent; `fields` passes any other job field the server accepts. Raises
        BadRequest naming the wrong field."""
        body: dict[str, Any] = {"args": list(args)}
        options = {
            "mime_type": mime_type,
            "webhook": webhook,
            "priority": priority,
            "queue": queue,
            "delay_seconds": delay_seconds,
            "timeout_seconds": timeout_seconds,
            "tags": list(tags) if tags is not None else None,
            **fields,
        }
        body.update({name: value for name, value in options.items() if value is not None})
        return Job.from_dict(self._post_once("/jobs", body))

    def _post_once(self, path: str, body: dict[str, Any]) -> Any:
        """POST that creates something, retried on errors that leave the outcome unknown; one
        Idempotency-Key for every attempt, so a retry never creates it twice. Returns the JSON answer."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._session.post(self._url(path), json=body, headers=headers, timeout=self._timeout)
            except STREAM_ERRORS as exc:
                if last or _never_connected(exc):  # the adapter already retried the connection itself
                    raise self._unreachable(exc) from exc
            else:
                retryable = response.status_code in (502, 504) or (
                    response.status_code == 503 and "Retry-After" in response.headers
                )
                if not retryable or last:
                    return self._check(response, path).json()
            time.sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def status(self, job_id: str) -> Job:
        """The job's current state. Raises JobNotFound for an unknown id."""
        return Job.from_dict(self._request("GET", f"/jobs/{job_id}/status").json())

    def result(self, job_id: str) -> bytes:
        """The result (the job's stdout) of a COMPLETED job. Raises Conflict in any other state."""
        return self._request("GET", f"/jobs/{job_id}/result").content

    def result_to(self, job_id: str, path: str | os.PathLike[str]) -> int:
        """Stream the result of a COMPLETED job into the file at `path` (replaced only once it is
        complete) and return its size in bytes. Raises Conflict in any other state."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        size = 0
        with self._request("GET", f"/jobs/{job_id}/result", stream=True) as response:
            try:
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        out.write(chunk)
                        size += len(chunk)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return size

    def logs(self, job_id: str, follow: bool = False, stream: str = "stderr", offset: int = 0) -> Iterator[str]:
        """The job's log (`stream`: "stderr" or "stdout") from byte `offset`, as text chunks. With
        `follow`, chunks come as the job writes them and the iterator ends when the job has finished;
        a dropped stream is resumed where it stopped. The first request is made at once, so an unknown
        id raises JobNotFound here rather than on the first next()."""
        params = {"stream": stream, "offset": offset}
        if not follow:
            text = self._request("GET", f"/jobs/{job_id}/logs", params=params).content.decode("utf-8", "replace")
            return iter([text] if text else [])
        return self._follow_logs(job_id, params, self._open_log_stream(job_id, params, None))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job and return it, CANCELED. For a running job this returns
        after its processes have ended. Raises Conflict if it had already finished."""
        # the server holds the answer until the job's process tree is gone: allow for its grace period
        response = self._request("PUT", f"/jobs/{job_id}/cancel", timeout=(self._timeout[0], self._timeout[1] + 60))
        return Job.from_dict(response.json())

    def list(
        self,
        status: str | Iterable[str] | None = None,
        tag: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
        search: str | None = None,
    ) -> Iterator[Job]:
        """Jobs, newest first, optionally only those in `status` (one state or several), with `tag`,
        and matching `search` (an id prefix, part of the command line, or a tag). Iterates over every
        page (or stops after `limit` jobs), asking for pages as it goes."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params: dict[str, Any] = {"status": statuses, "limit": page_size}
        if tag:
            params["tag"] = tag
        if search:
            params["q"] = search
        count = 0
        while True:
            page = self._request("GET", "/jobs", params=params).json()
            for data in page.get("jobs", []):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield Job.from_dict(data)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its files. Raises Conflict while it is queued or running."""
        self._request("DELETE", f"/jobs/{job_id}")

    def rerun(self, job_id: str) -> Job:
        """Submit a new job with the same request as `job_id`; returns the new job (its `rerun_of` set)."""
        return Job.from_dict(self._request("POST", f"/jobs/{job_id}/rerun").json())

    # -- the server -----------------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Every job state change as it happens ({"id", "status", "enqueued_at", ...}), until the
        caller stops iterating. Raises on a dropped stream; does not reconnect."""
        response = self._request("GET", "/events", stream=True, headers={"Accept": "text/event-stream"})

        def generate() -> Iterator[dict[str, Any]]:
            with response:
                for event in iter_events(response):
                    if event.event == "job":
                        yield json.loads(event.data)

        return generate()

    def stats(self) -> dict[str, Any]:
        """Counts per state, busy and total worker slots, and submitted/completed per second."""
        return self._request("GET", "/stats").json()

    def queues(self) -> list[dict[str, Any]]:
        """Every queue: name, parallelism, paused, queued and running counts."""
        return self._request("GET", "/queues").json()["queues"]

    def set_queue(self, name: str, *, paused: bool | None = None, parallelism: int | None = None) -> dict[str, Any]:
        """Pause, resume or resize a queue (created if new); returns it. Needs the admin scope."""
        body = {k: v for k, v in (("paused", paused), ("parallelism", parallelism)) if v is not None}
        return self._request("PUT", f"/queues/{name}", json=body).json()

    def resources(self) -> dict[str, Any]:
        """The server's GPUs (each with the job holding it, if any) and counted resources (total, in use, free)."""
        return self._request("GET", "/resources").json()

    def health(self) -> dict[str, Any]:
        """The server's health checks; raises Unavailable when it is not ready. Needs no key."""
        return self._request("GET", "/health").json()

    # -- API keys (admin scope) -----------------------------------------------------------------------

    def create_key(self, name: str, scopes: Iterable[str]) -> ApiKey:
        """Create an API key; the returned ApiKey's `key` is the secret, shown this once only."""
        body = {"name": name, "scopes": list(scopes)}
        return ApiKey.from_dict(self._request("POST", "/admin/keys", json=body).json())

    def list_keys(self) -> list[ApiKey]:
        """Every API key (without its secret)."""
        data = self._request("GET", "/admin/keys").json()
        items = data.get("keys", []) if isinstance(data, dict) else data
        return [ApiKey.from_dict(item) for item in items]

    def revoke_key(self, key_id: str) -> None:
        """Revoke an API key: requests with it are refused (401) from now on."""
        self._request("DELETE", f"/admin/keys/{key_id}")

    # -- plumbing -------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _request(
        self, method: str, path: str, *, stream: bool = False, timeout: Any = None, **kw: Any
    ) -> requests.Response:
        try:
            response = self._session.request(
                method, self._url(path), stream=stream, timeout=timeout or self._timeout, **kw
            )
        except STREAM_ERRORS as exc:
            raise self._unreachable(exc) from exc
        return self._check(response, path)

    def _check(self, response: requests.Response, path: str) -> requests.Response:
        if response.status_code < 400:
            return response
        title, description = "", ""
        try:
            body = response.json()
            title, description = str(body.get("title", "")), str(body.get("description", ""))
        except ValueError:
            description = response.text[:500]
        finally:
            response.close()
        description = description or title or response.reason or "error"
        raise error_for(response.status_code, title or response.reason or "", description, path.startswith("/jobs/"))

    def _unreachable(self, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(f"no answer from {self.base_url}: {_reason(exc)}")


def _never_connected(exc: Exception) -> bool:
    """True when the request never reached the server (refused, unresolvable): retrying a POST is
    then safe, and the adapter has already done it."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        return isinstance(reason.reason, NewConnectionError)
    return isinstance(exc, requests.ConnectTimeout)


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    if isinstance(reason, MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    return str(reason)
