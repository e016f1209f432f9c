"""The client's exceptions: one class per kind of answer, each carrying the server's status and message."""

from __future__ import annotations

from typing import Any


class ProcqError(Exception):
    """Raised when the server answers with an error or cannot be reached. `status` is the HTTP status
    (None when no answer came), `title` and `description` are the server's JSON error fields."""

    def __init__(self, description: str, status: int | None = None, title: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.title = title or ""
        self.description = description

    def __str__(self) -> str:
        title = self.title if self.title.startswith(str(self.status)) else f"{self.status} {self.title}".strip()
        return f"{title}: {self.description}" if self.status else self.description


class BadRequest(ProcqError):
    """Raised on 400: the request was invalid; the description names the field and what is allowed."""


class Unauthorized(ProcqError):
    """Raised on 401: the server requires an API key and none, or an unknown one, was sent."""


class Forbidden(ProcqError):
    """Raised on 403: the API key is valid but lacks the scope this call needs."""


class NotFound(ProcqError):
    """Raised on 404 for anything that is not a job (an unknown route, key, or queue)."""


class JobNotFound(NotFound):
    """Raised on 404 for a job id the server does not know."""


class Conflict(ProcqError):
    """Raised on 409: the job is in the wrong state for the call (e.g. the result of a running job)."""


class PayloadTooLarge(ProcqError):
    """Raised on 413: the request body is over the server's limit."""


class ServerError(ProcqError):
    """Raised on a 5xx answer that retries did not get past."""


class Unavailable(ServerError):
    """Raised on 503: the server is shutting down or busy."""


class ConnectionFailed(ProcqError):
    """Raised when no answer came at all: connection refused, reset, or timed out after retries."""


class WaitTimeout(ProcqError, TimeoutError):
    """Raised by Client.wait when the job is still not finished at the deadline; `job` is its last state."""

    def __init__(self, description: str, job: Any = None) -> None:
        super().__init__(description)
        self.job = job


_BY_STATUS: dict[int, type[ProcqError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
}


def error_for(status: int, title: str, description: str, job_path: bool = False) -> ProcqError:
    """The exception for an error answer; a 404 on a /jobs/{id}/... path is a JobNotFound."""
    if status == 404 and job_path:
        return JobNotFound(description, status, title)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProcqError)
    return cls(description, status, title)
