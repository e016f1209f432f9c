"""The /jobs resource: submit, rerun, status, result, cancel, delete (and the listing, api/listing.py). It
parses and shapes; the Dispatcher decides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon

from procq.actors import osdeps
from procq.actors.dispatch.receipts import Accepted
from procq.actors.errors import InvalidRequest, JobConflict, JobNotFound, NotRegularFile, StorageError
from procq.actors.job import Job, JobRequest, Status, is_job_id
from procq.api.ask import ASK_TIMEOUT_S, ask
from procq.api.auth import owner_filter, owner_of_request
from procq.api.commands import CommandPolicy
from procq.api.listing import list_page
from procq.api.parse import parse_submit, read_json

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy

MAX_BATCH = 1000  # jobs in one POST /jobs/batch
DELETE_WAIT_S = 5.0  # how long DELETE waits for the directory to go before answering anyway
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class JobsResource:
    """POST|GET /jobs, DELETE /jobs/{job_id}, POST /jobs/{job_id}/rerun and GET|PUT
    /jobs/{job_id}/{status,result,cancel}. Runs on waitress threads."""

    def __init__(
        self,
        dispatcher: DispatcherProxy,
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
        accepted = self._accept(req, data, [self._request(req, data)])
        job = committed(accepted)[0]
        resp.status = falcon.HTTP_201 if accepted.created else falcon.HTTP_200  # 200: a replay, as it is now
        resp.location = f"/jobs/{job.id}/status"
        resp.media = job.to_dict()

    def on_post_batch(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /jobs/batch: up to MAX_BATCH jobs, all or nothing, in one commit."""
        data = read_json(req, self._max_body_bytes)
        bodies = data.get("jobs") if isinstance(data, dict) and data.keys() == {"jobs"} else None
        if not isinstance(bodies, list) or not 1 <= len(bodies) <= MAX_BATCH:
            raise falcon.HTTPBadRequest(
                title="Invalid job request",
                description=f'The body must be {{"jobs": [...]}} with 1 to {MAX_BATCH} job bodies as POST /jobs takes.',
            )
        requests = []
        for index, body in enumerate(bodies):
            try:
                requests.append(self._request(req, body))
            except (falcon.HTTPBadRequest, InvalidRequest) as exc:  # name the item: nothing is created
                description = exc.description if isinstance(exc, falcon.HTTPError) else str(exc)
                raise falcon.HTTPBadRequest(
                    title="Invalid job request", description=f"jobs[{index}]: {description}"
                ) from exc
        accepted = self._accept(req, data, requests)
        jobs = committed(accepted)
        resp.status = falcon.HTTP_201 if accepted.created else falcon.HTTP_200
        resp.media = {"jobs": [job.to_dict() for job in jobs]}

    def _request(self, req: falcon.Request, data: Any) -> JobRequest:
        request = parse_submit(data, self._cwd_root)
        request = dataclasses.replace(self._commands.apply(request), owner=owner_of_request(req))
        self._check_dependencies(req, request.after)
        return request

    def _accept(self, req: falcon.Request, data: Any, requests: list[JobRequest]) -> Accepted:
        """Hand the requests to the Dispatcher, under the request's Idempotency-Key if it has one."""
        key = req.get_header("Idempotency-Key")
        if key is None:
            return ask(self._dispatcher.accept(requests))
        key_sha256, body_sha256 = self._key_hashes(requests[0], key, data)
        return ask(self._dispatcher.accept(requests, key_sha256, body_sha256))

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

    def _key_hashes(self, request: JobRequest, key: str, data: Any) -> tuple[str, str]:
        """The hashes of an Idempotency-Key and of the body it covers: only they reach the Dispatcher
        and the disk."""
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
        return key_sha256, body_sha256

    def on_post_rerun(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        original = self._job(job_id)  # 404 for an unknown or malformed id
        self._commands.check(original.args, original.env)  # the allow-list may have changed since
        job = committed(ask(self._dispatcher.rerun(job_id, owner=owner_of_request(req))))[0]
        resp.status = falcon.HTTP_201
        resp.location = f"/jobs/{job.id}/status"
        resp.media = job.to_dict()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = list_page(self._dispatcher, req)  # GET /jobs: see api/listing.py

    def on_get_status(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = self._job(job_id).to_dict()

    def on_get_job(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """GET /jobs/{id}: the job, as /status gives it (the first URL people try)."""
        resp.media = self._job(job_id).to_dict()

    def on_get_result(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        job = self._job(job_id)
        if job.status is not Status.COMPLETED:
            raise JobConflict(job.id, job.status.value, "fetching the result", "COMPLETED")
        if job.node is not None:  # cluster mode: the copy its node kept, never this node's file of a lost attempt
            kept = ask(self._dispatcher.kept_output(job.id, "stdout.txt"))
            if kept is not None and kept.complete:
                resp.content_type = job.mime_type
                resp.data = kept.data
                return
        path = self._jobs_dir / job.id / "stdout.txt"
        try:
            result = osdeps.open_inside(path, self._jobs_dir)  # waitress streams it, then closes it
        except FileNotFoundError as exc:
            if job.node is None:  # a single machine: the file should be here
                raise StorageError("open the job's result", exc) from exc
            resp.content_type = job.mime_type
            resp.data = self._kept_result(job)
            return
        except osdeps.NotARegularFile as exc:
            raise NotRegularFile(job.id, "stdout.txt") from exc
        except OSError as exc:
            raise StorageError("open the job's result", exc) from exc
        resp.content_type = job.mime_type
        resp.set_stream(result, os.fstat(result.fileno()).st_size)

    def _kept_result(self, job: Job) -> bytes:
        """Cluster mode, a job another node ran: its result as that node kept it in the database."""
        kept = ask(self._dispatcher.kept_output(job.id, "stdout.txt"))
        if kept is None or not kept.complete:
            beyond = "is larger than --cluster-output-cap" if kept is not None else "was not kept in the database"
            raise falcon.HTTPServiceUnavailable(
                title="Result only on its node",
                description=f"Job {job.id} ran on node {job.node}, and its result {beyond}; "
                f"ask node {job.node} (GET /nodes gives its address), or bring it back if it is down.",
            )
        return kept.data

    def on_put_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        self._job(job_id)  # 404 before anything else
        finished = ask(self._dispatcher.cancel(job_id))
        if isinstance(finished, Future):  # a queued job: its CANCELED state is being committed
            finished.result(ASK_TIMEOUT_S)  # StorageError if it could not be
        elif not finished.wait(timeout=self._cancel_wait_s):
            trouble = ask(self._dispatcher.trouble())
            if trouble is not None:  # the tree is gone, but its end cannot be recorded
                raise StorageError("record the cancel", RuntimeError(trouble))
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
        commit, removed = ask(self._dispatcher.delete(job_id))
        commit.result(ASK_TIMEOUT_S)  # durable before it is answered: StorageError if it could not be
        # The job is already gone from every answer; a directory Windows still holds open is
        # removed by a later sweep, so the client need not wait for that.
        removed.wait(DELETE_WAIT_S)
        resp.status = falcon.HTTP_204

    def _job(self, job_id: str) -> Job:
        if not is_job_id(job_id):  # never let a request's text near a path
            raise JobNotFound(job_id)
        return ask(self._dispatcher.get(job_id))


def committed(accepted: Accepted) -> tuple[Job, ...]:
    """The accepted jobs once they are durable: a submit is answered only after its commit. Raises
    StorageError if the store could not commit them, 503 if it takes too long."""
    try:
        return accepted.wait(ASK_TIMEOUT_S)
    except TimeoutError:
        raise falcon.HTTPServiceUnavailable(
            title="Store busy",
            description=f"The jobs were not committed within {ASK_TIMEOUT_S:.0f} s; send the request again "
            "with the same Idempotency-Key to learn whether they were made.",
        ) from None
