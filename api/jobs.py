"""The /jobs resources: submit, status, result, cancel. They parse and shape; the Dispatcher decides."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import falcon

from actors import osdeps
from actors.errors import JobConflict, JobNotFound, StorageError
from actors.job import Job, Status, is_job_id
from api.auth import owner_of_request
from api.commands import CommandPolicy
from api.listing import list_page
from api.schema import parse_submit, read_json

ASK_TIMEOUT_S = 10.0  # how long a request waits for the Dispatcher before answering 503


class JobsResource:
    """POST /jobs and GET|PUT /jobs/{job_id}/{status,result,cancel}. Runs on waitress threads."""

    def __init__(
        self,
        dispatcher: Any,
        jobs_dir: Path,
        max_body_bytes: int,
        cancel_wait_s: float,
        commands: CommandPolicy | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._jobs_dir = jobs_dir
        self._max_body_bytes = max_body_bytes
        self._cancel_wait_s = cancel_wait_s
        self._commands = commands or CommandPolicy(())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request = parse_submit(read_json(req, self._max_body_bytes))
        request = dataclasses.replace(self._commands.apply(request), owner=owner_of_request(req))
        job = self._dispatcher.submit(request).get(timeout=ASK_TIMEOUT_S)
        resp.status = falcon.HTTP_201
        resp.location = f"/jobs/{job.id}/status"
        resp.media = job.to_dict()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = list_page(self._dispatcher, req)  # GET /jobs: see api/listing.py

    def on_get_status(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = self._job(job_id).to_dict()

    def on_get_result(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        job = self._job(job_id)
        if job.status is not Status.COMPLETED:
            raise JobConflict(job.id, job.status.value, "fetching the result", "COMPLETED")
        path = self._jobs_dir / job.id / "stdout.txt"
        try:
            result = osdeps.open_inside(path, self._jobs_dir)  # waitress streams it, then closes it
        except OSError as exc:
            raise StorageError("open the job's result", exc) from exc
        resp.content_type = job.mime_type
        resp.set_stream(result, os.fstat(result.fileno()).st_size)

    def on_put_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        self._job(job_id)  # 404 before anything else
        finished = self._dispatcher.cancel(job_id).get(timeout=ASK_TIMEOUT_S)
        if not finished.wait(timeout=self._cancel_wait_s):
            raise falcon.HTTPServiceUnavailable(
                title="Cancel still in progress",
                description=f"Job {job_id}'s processes did not end within {self._cancel_wait_s:.0f} s; "
                "check its status again shortly.",
            )
        job = self._job(job_id)
        if job.status is not Status.CANCELED:  # it finished on its own before the cancel reached it
            raise JobConflict(job.id, job.status.value, "cancel", "IN_QUEUE or IN_PROGRESS")
        resp.media = job.to_dict()

    def _job(self, job_id: str) -> Job:
        if not is_job_id(job_id):  # never let a request's text near a path
            raise JobNotFound(job_id)
        return self._dispatcher.get(job_id).get(timeout=ASK_TIMEOUT_S)
