"""The tables of the store of record and how a Job maps to a row; plain SQL that PostgreSQL takes too.

Placeholders are `?` (sqlite3's qmark style); an engine with another style rewrites them once.
The job object itself is the `body` column (its JSON, exactly what meta.json holds); the other
columns are copies of the fields that queries filter or sort on, so no query parses a body.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

from procq.actors.job import Job, Status

VERSION = 1

TABLES = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        queue TEXT NOT NULL,
        owner TEXT,
        idem TEXT,
        enqueued_at TEXT,
        completed_at TEXT,
        owed INTEGER NOT NULL,
        synced INTEGER NOT NULL,  -- the session that wrote its meta.json from this row; 0: not yet
        body TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, job_id TEXT NOT NULL, PRIMARY KEY (tag, job_id))",
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # status listings and start-up: the ids of one status in order, without touching other rows
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id)",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, id) WHERE owner IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_idem ON jobs (idem) WHERE idem IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_owed ON jobs (id) WHERE owed = 1",
    "CREATE INDEX IF NOT EXISTS jobs_unsynced ON jobs (id) WHERE synced = 0",
    "CREATE INDEX IF NOT EXISTS jobs_completed ON jobs (completed_at) WHERE completed_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS tags_job ON tags (job_id)",
)

_COLUMNS = "id, status, queue, owner, idem, enqueued_at, completed_at, owed, synced, body"
INSERT_JOB = f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_TAG = "INSERT INTO tags (tag, job_id) VALUES (?, ?)"
# only rows that exist: a late change of a deleted job must not bring it back
UPDATE_JOB = (
    "UPDATE jobs SET status = ?, queue = ?, owner = ?, idem = ?, enqueued_at = ?, completed_at = ?, owed = ?, "
    "synced = 0, body = ? WHERE id = ?"
)
MARK_SYNCED = "UPDATE jobs SET synced = ? WHERE id = ?"
UNSYNC_SESSIONS = "UPDATE jobs SET synced = 0 WHERE synced >= ?"
DELETE_JOB = "DELETE FROM jobs WHERE id = ?"
DELETE_TAGS = "DELETE FROM tags WHERE job_id = ?"

GET = "SELECT body FROM jobs WHERE id = ?"
BY_KEY = "SELECT body FROM jobs WHERE idem = ? ORDER BY id"
WITH_STATUS = "SELECT body FROM jobs WHERE status = ? ORDER BY id"
OWED = "SELECT body FROM jobs WHERE owed = 1 ORDER BY id"
UNSYNCED = "SELECT id, body FROM jobs WHERE synced = 0"
COUNTS = "SELECT status, count(*) FROM jobs GROUP BY status"
COUNTS_OF = "SELECT status, count(*) FROM jobs WHERE owner = ? GROUP BY status"
EXPIRED = (
    "SELECT body FROM jobs WHERE completed_at IS NOT NULL AND completed_at < ? AND owed = 0 "
    "AND status IN ('COMPLETED', 'FAILED', 'CANCELED') ORDER BY completed_at LIMIT ?"
)
GET_SETTING = "SELECT value FROM settings WHERE name = ?"
PUT_SETTING = "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"


def encode(job: Job) -> bytes:
    """The job's JSON: the body column and, byte for byte, its meta.json."""
    return orjson.dumps(job.to_dict())


def decode(body: str | bytes) -> Job:
    return Job.from_dict(orjson.loads(body))


def owes_webhook(job: Job) -> int:
    delivery = job.webhook_delivery
    return int(job.status.terminal and delivery is not None and delivery.state == "pending")


def insert_row(job: Job, body: bytes, synced: int = 0) -> tuple[Any, ...]:
    return (
        job.id,
        job.status.value,
        job.queue,
        job.owner,
        job.idempotency_key_sha256,
        job.enqueued_at,
        job.completed_at,
        owes_webhook(job),
        synced,
        body.decode(),
    )


def update_row(job: Job, body: bytes) -> tuple[Any, ...]:
    return (
        job.status.value,
        job.queue,
        job.owner,
        job.idempotency_key_sha256,
        job.enqueued_at,
        job.completed_at,
        owes_webhook(job),
        body.decode(),
        job.id,
    )


def tag_rows(jobs: Iterable[Job]) -> list[tuple[str, str]]:
    return [(tag, job.id) for job in jobs for tag in set(job.tags)]


def page_query(
    statuses: Collection[Status] | None,
    tag: str | None,
    owner: str | None,
    before: str | None,
    limit: int,
    search: str | None = None,
) -> tuple[str, list[Any]]:
    """The SQL for one page of a listing, newest first (ids sort by creation time). Several statuses
    become one index range each, merged: a plain `status IN (...)` would sort every matching row."""
    if tag is not None or search or not statuses or len(statuses) == 1:
        return _page_part(statuses, tag, owner, before, limit, search)
    parts: list[str] = []
    params: list[Any] = []
    for status in sorted(statuses):
        sql, part_params = _page_part((status,), None, owner, before, limit)
        parts.append(f"SELECT * FROM ({sql}) AS s{len(parts)}")
        params.extend(part_params)
    params.append(limit)
    return f"SELECT id, body FROM ({' UNION ALL '.join(parts)}) AS pages ORDER BY id DESC LIMIT ?", params


def _page_part(
    statuses: Collection[Status] | None,
    tag: str | None,
    owner: str | None,
    before: str | None,
    limit: int,
    search: str | None = None,
) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    source = "jobs"
    if tag is not None:  # driven by the tag's own index: a rare tag never scans the whole table
        source = "tags JOIN jobs ON jobs.id = tags.job_id"
        where.append("tags.tag = ?")
        params.append(tag)
    if statuses:
        where.append(f"jobs.status IN ({', '.join('?' for _ in statuses)})")
        params.extend(sorted(status.value for status in statuses))
    if owner is not None:
        where.append("jobs.owner = ?")
        params.append(owner)
    if search:  # a scan, newest first, until the page is full (the command: SQLite's JSON functions)
        where.append(
            "(jobs.id LIKE ? OR EXISTS (SELECT 1 FROM tags AS t WHERE t.job_id = jobs.id AND t.tag = ?)"
            " OR instr(lower(json_extract(jobs.body, '$.args')), ?) > 0)"
        )
        params.extend([search.lower() + "%", search, search.lower()])
    order = "tags.job_id" if tag is not None else "jobs.id"  # the driving index's order: nothing to sort
    if before is not None:
        where.append(f"{order} < ?")
        params.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(limit)
    return f"SELECT jobs.id, jobs.body FROM {source}{clause} ORDER BY {order} DESC LIMIT ?", params
