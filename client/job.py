"""The job object as the client sees it: a typed, tolerant mirror of the server's JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STATES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELED")
"""Every job state, in lifecycle order."""

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})
"""States a job never leaves."""


@dataclass(frozen=True)
class Job:
    """One job as GET /jobs/{id}/status returns it. Fields the server adds later are kept in `raw`
    (the whole JSON object), so nothing is lost and old clients keep working."""

    id: str
    args: list[str]
    status: str
    mime_type: str = "text/plain"
    webhook: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0
    enqueued_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    tags: list[str] = field(default_factory=list)
    priority: int = 0
    queue: str = "default"
    run_at: str | None = None
    timeout_seconds: float | None = None
    resources: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    owner: str | None = None
    rerun_of: str | None = None
    requires: dict[str, int] = field(default_factory=dict)
    assigned: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Build a Job from the server's JSON; unknown fields are ignored (they stay in `raw`),
        and a null where a default exists becomes that default."""
        known = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("tags", "runs", "requires"):
            if values.get(name) is None:
                values.pop(name, None)
        values["args"] = list(values.get("args") or [])
        return cls(**values, raw=dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The job's JSON object exactly as the server sent it (unknown fields included)."""
        return dict(self.raw) if self.raw else {k: v for k, v in dataclasses.asdict(self).items() if k != "raw"}

    @property
    def terminal(self) -> bool:
        """True once the job is COMPLETED, FAILED or CANCELED: it will not change again."""
        return self.status in TERMINAL_STATES

    def time(self, name: str) -> datetime | None:
        """One of the timestamp fields (`enqueued_at`, `started_at`, `completed_at`, `run_at`) as an
        aware datetime, or None when it is unset."""
        value = getattr(self, name)
        return parse_time(value) if value else None


@dataclass(frozen=True)
class ApiKey:
    """An API key as /admin/keys shows it. `key` (the secret) is set only in the answer to create_key."""

    id: str
    name: str
    scopes: list[str]
    created_at: str | None = None
    key: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKey:
        """Build an ApiKey from the server's JSON, ignoring fields this client does not know."""
        known = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        return cls(**{k: v for k, v in data.items() if k in known}, raw=dict(data))


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (the server's `...Z` form, or with an offset) as an aware datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
