"""procq's Python client: `Client` over the HTTP API, the `Job` it returns, and its exceptions."""

from __future__ import annotations

from procq.client.client import DEFAULT_URL, Client
from procq.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    JobNotFound,
    NotFound,
    PayloadTooLarge,
    ProcqError,
    ServerError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from procq.client.job import STATES, TERMINAL_STATES, ApiKey, Job

__all__ = [
    "DEFAULT_URL",
    "STATES",
    "TERMINAL_STATES",
    "ApiKey",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "Job",
    "JobNotFound",
    "NotFound",
    "PayloadTooLarge",
    "ProcqError",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]
