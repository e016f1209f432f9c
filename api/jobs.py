"""The /jobs resource: submit, rerun, status, result, cancel, delete (and the listing, api/listing.py). It
parses and shapes; the Dispatcher decides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import falcon
from procq.actors import osdeps
from procq.actors.errors import InvalidRequest, JobConflict, JobNotFound, StorageError
from procq.actors.job import Job, JobRequest, Status, is_job_id
from procq.api.ask import ask
from procq.api.auth import owner_filter, owner_of_request
from procq.api.commands import CommandPolicy
from procq.api.listing import list_page
from procq.api.parse import parse_submit, read_json

DELETE_WAIT_S = 5.0  # how long DELETE waits for the directory to go before answering anyway
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class JobsResource:
    """POST|GET /jobs, DELETE /jobs/{job_id}, POST /jobs/{job_id}/rerun and GET|PUT
    /jobs/{job_id}/{status,result,cancel}. Runs on waitress threads."""

    def __init__(
        self,
        dispatcher: Any,
        jobs_dir: Path,
        max_body_bytes: int,
        cancel_wait_s: float,
        commands: CommandPolicy | None = None,
        cwd_root: Path | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._cwd_root = cwd_root
        self._jobs_dir = jobs_dir
        self._max_body_bytes = max_body_bytes
        self._cancel_wait_s = cancel_wait_s
        self._commands = commands or CommandPolicy(())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        data = read_json(req, self._max_body_bytes)
        request = parse_submit(data, self._cwd_root)
        request = dataclasses.replace(self._commands.apply(request), owner=owner_of_request(req))
        self._check_dependencies(req, request.after)
        key = req.get_header("Idempotency-Key")
        if key is not None:
            job, created = self._submit_once(request, key, data)
            if not created:  # a replay: the original job, as it is now
                resp.status = falcon.HTTP_200
                resp.location = f"/jobs/{job.id}/status"
                resp.media = job.to_dict()
                return
        else:
            job = ask(self._dispatcher.submit(request))
        resp.status = falcon.HTTP_201
        resp.location = f"/jobs/{job.id}/status"
        resp.media = job.to_dict()

    def _check_dependencies(self, req: falcon.Request, after: tuple[str, ...]) -> None:
        """A key that sees only its own jobs may wait only for its own jobs: another owner's id is
        refused exactly like an unknown one, so `after` cannot probe what others run."""
        owner = owner_filter(req)
        if owner is None:
            return  # auth off or an admin key: the Dispatcher checks that the ids exist
        for job_id in after:
            try:
                visible = ask(self._dispatcher.get(job_id)).owner == owner
            except JobNotFound:
                visible = False
            if not visible:
                raise InvalidRequest(f"after: there is no job with id {job_id!r}; after lists ids of existing jobs")

    def _submit_once(self, request: JobRequest, key: str, data: Any) -> tuple[Job, bool]:
        """Submit under an Idempotency-Key. Only hashes reach the Dispatcher and the disk."""
        if _IDEMPOTENCY_KEY.fullmatch(key) is None:
            raise falcon.HTTPBadRequest(
                title="Invalid Idempotency-Key",
                description="The Idempotency-Key header must be 1 to 255 printable ASCII characters "
                "(a UUID is a good choice).",
            )
        # Scoped to the submitter when keys identify one (the job's `owner`): one client's key can
        # never return another client's job.
        scope = request.owner or ""
        key_sha256 = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body_sha256 = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return ask(self._dispatcher.submit_once(request, key_sha256, body_sha256))

    def on_post_rerun(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        original = self._job(job_id)  # 404 for an unknown or malformed id
        self._commands.check(original.args, original.env)  # the allow-list may have changed since
        job = ask(self._dispatcher.rerun(job_id, owner=owner_of_request(req)))
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
        finished = ask(self._dispatcher.cancel(job_id))
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

    def on_delete_job(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """Forget a finished job and remove its directory."""
        if not is_job_id(job_id):  # never let a request's text near a path
            raise JobNotFound(job_id)
        removed = ask(self._dispatcher.delete(job_id))
        # The job is already gone from every answer; a directory Windows still holds open is
        # removed by a later sweep, so the client need not wait for that.
        removed.wait(DELETE_WAIT_S)
        resp.status = falcon.HTTP_204

    def _job(self, job_id: str) -> Job:
        if not is_job_id(job_id):  # never let a request's text near a path
            raise JobNotFound(job_id)
        return ask(self._dispatcher.get(job_id))
