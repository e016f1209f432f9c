"""The job object (states, fields, its JSON form), the server-made job ids, and the patterns of ids and queue names."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JOB_ID_PATTERN = "^[0-9a-f]{32}$"  # the ids IdGenerator makes; checked before any path is built from one
QUEUE_NAME_PATTERN = "^[a-z0-9_-]{1,32}$"  # queue names in requests and in --queue
DEFAULT_QUEUE = "default"
_JOB_ID = re.compile(JOB_ID_PATTERN.strip("^$"))


class Status(enum.StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELED)


class DeliveryState(enum.StrEnum):
    """Where the completion webhook stands; `failed` means every attempt was spent."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The completion webhook's state, its attempts so far and when the next one is due."""

    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: str | None = None
    delivered_at: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One attempt of a job: when it ran, how it ended, and what it used (its whole process tree)."""

    attempt: int
    started_at: str | None = None
    completed_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    wall_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    peak_rss_bytes: int | None = None
    peak_gpu_memory_bytes: int | None = None  # sampled on NVIDIA GPUs where the management library is installed


@dataclass(frozen=True, slots=True)
class Usage:
    """Resource usage of one run's process tree, as far as sampling and reaping saw it."""

    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_gpu_memory_bytes: int | None = None  # None: not measured (no GPU, or no management library)

    def merge(self, other: Usage) -> Usage:
        gpu = [value for value in (self.peak_gpu_memory_bytes, other.peak_gpu_memory_bytes) if value is not None]
        return Usage(
            max(self.cpu_user_s, other.cpu_user_s),
            max(self.cpu_system_s, other.cpu_system_s),
            max(self.peak_rss_bytes, other.peak_rss_bytes),
            max(gpu) if gpu else None,
        )


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a client asked for in POST /jobs, already validated."""

    args: tuple[str, ...]
    mime_type: str = "text/plain"
    webhook: str | None = None
    # see transitions.new_job for how these become the job's fields
    priority: int = 0
    queue: str = DEFAULT_QUEUE
    run_at: str | None = None
    delay_seconds: float | None = None
    after: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    max_output_bytes: int | None = None
    max_memory_bytes: int | None = None
    max_attempts: int = 1
    retry_backoff_seconds: float = 1.0
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    webhook_events: tuple[str, ...] = ("completed",)
    tags: tuple[str, ...] = ()
    owner: str | None = None  # id of the API key that submits it
    requires: tuple[tuple[str, int], ...] = ()  # (resource, units): "gpus" and the node's counted resources


@dataclass(frozen=True, slots=True)
class Job:
    """One job, exactly as GET /jobs/{id}/status shows it and meta.json stores it. Immutable:
    a change makes a new Job (`dataclasses.replace`), so actors can hand it around safely."""

    id: str
    args: tuple[str, ...]
    mime_type: str = "text/plain"
    webhook: str | None = None
    status: Status = Status.IN_QUEUE
    pid: int | None = None
    pid_started_at: float | None = None  # the process's create time: tells our child from a reused pid
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0
    enqueued_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    cancel_requested_at: str | None = None  # a cancel of the running job was asked for (and recorded)
    node: str | None = None  # cluster mode: the node that runs (or last ran) it; None on a single machine
    interrupted: str | None = None  # why the last run was cut short (shutdown, crash), if one was
    webhook_delivery: Delivery | None = None
    # ordering, limits, retries, submit options (README "Deciding what runs")
    priority: int = 0
    queue: str = DEFAULT_QUEUE
    run_at: str | None = None
    after: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    max_output_bytes: int | None = None
    max_memory_bytes: int | None = None
    max_attempts: int = 1
    retry_backoff_seconds: float = 1.0
    runs: tuple[Run, ...] = ()
    resources: dict[str, Any] | None = None  # the usage numbers of the last run; never mutated
    rerun_of: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # never mutated
    cwd: str | None = None
    webhook_events: tuple[str, ...] = ("completed",)
    idempotency_key_sha256: str | None = None  # a hash: the client's key itself is never stored
    request_sha256: str | None = None  # hash of the submitted body, to tell a replay from a misuse
    tags: tuple[str, ...] = ()  # labels from the submitter, for filtering GET /jobs
    owner: str | None = None  # id of the API key that submitted it; a non-admin key sees only its own
    requires: dict[str, int] = dataclasses.field(default_factory=dict)  # GPUs and units it needs; never mutated
    assigned: dict[str, Any] | None = None  # what its current or last run was given: {"gpus": ["1"], ...}

    def to_dict(self) -> dict[str, Any]:
        # field names looked up once (dataclasses.fields and asdict cost more than the rest of this
        # together, and this runs several times per job); Run and Delivery hold only scalars
        data = {name: getattr(self, name) for name in _JOB_NAMES}
        data["args"] = list(self.args)
        data["tags"] = list(self.tags)
        data["status"] = self.status.value
        delivery = self.webhook_delivery
        if delivery is not None:
            data["webhook_delivery"] = {name: getattr(delivery, name) for name in _DELIVERY_NAMES}
            data["webhook_delivery"]["state"] = delivery.state.value
        data.update(after=list(self.after), webhook_events=list(self.webhook_events), env=dict(self.env))
        data["requires"] = dict(self.requires)
        data["runs"] = [{name: getattr(run, name) for name in _RUN_NAMES} for run in self.runs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Build a Job from its JSON form; raises ValueError, TypeError or KeyError if it is not one."""
        # tolerate fields of newer versions; the common case (all known) skips the filtering
        fields = dict(data) if data.keys() <= _JOB_FIELDS else {k: v for k, v in data.items() if k in _JOB_FIELDS}
        args = fields["args"]
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a non-empty list of strings")
        fields["args"] = tuple(args)
        tags = fields.get("tags")
        fields["tags"] = tuple(map(str, tags)) if tags else ()
        fields["status"] = Status(fields["status"])
        if not is_job_id(fields["id"]):
            raise ValueError(f"not a job id: {fields['id']!r}")
        if fields.get("webhook_delivery") is not None:
            delivery = fields["webhook_delivery"]
            fields["webhook_delivery"] = Delivery(**{**delivery, "state": DeliveryState(delivery["state"])})
        for name in ("after", "webhook_events"):
            if name in fields:
                fields[name] = tuple(fields[name])
        runs = fields.get("runs")
        fields["runs"] = (
            tuple(Run(**{k: v for k, v in run.items() if k in _RUN_FIELDS}) for run in runs) if runs else ()
        )
        return cls(**fields)


_JOB_FIELDS = frozenset(f.name for f in dataclasses.fields(Job))
_JOB_NAMES = tuple(f.name for f in dataclasses.fields(Job))
_RUN_NAMES = tuple(f.name for f in dataclasses.fields(Run))
_DELIVERY_NAMES = tuple(f.name for f in dataclasses.fields(Delivery))
_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(Run))


def is_job_id(value: object) -> bool:
    """True for ids this server makes. Checked before any path is built from a request's id."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


class IdGenerator:
    """Makes UUIDv7-style ids as 32 lowercase hex digits: 48-bit milliseconds first, so ids sort by
    creation time, then a counter that keeps ids made in the same millisecond in order."""

    def __init__(self, clock_ms: Any = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def __call__(self) -> str:
        with self._lock:
            ms = self._clock_ms()
            if ms <= self._last_ms:
                ms, self._seq = self._last_ms, self._seq + 1
                if self._seq >= 1 << 12:  # 4096 ids in one millisecond: borrow the next one
                    ms, self._seq = ms + 1, 0
            else:
                self._seq = int.from_bytes(os.urandom(1), "big")  # leaves room for 3,840 more
            self._last_ms = ms
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (self._seq << 64) | (0b10 << 62) | rand
        return f"{value:032x}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, microseconds included."""
    # isoformat, not strftime: this runs several times per job, and it is three times faster
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)  # takes the Z suffix since Python 3.11; 60x faster than strptime
