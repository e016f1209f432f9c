"""meta.json as the store's mirror: written from committed state, replaced atomically, never fsynced
(the store is the truth; a file a power cut left stale is rewritten from it at the next start)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from procq.actors import osdeps
from procq.actors.job import Job, is_job_id

STAGING_PREFIX = ".new-"  # a job directory being built; renamed into place once its job is committed
META = "meta.json"


def stage(jobs_dir: str, job_id: str, body: bytes) -> str:
    """Build `.new-<id>/meta.json` for a job about to be committed. Raises OSError, leaving nothing.
    Plain strings, not pathlib: this runs for every new job on the store's one writer thread."""
    staging = os.path.join(jobs_dir, STAGING_PREFIX + job_id)
    os.mkdir(staging)
    try:
        with open(os.path.join(staging, META), "wb") as handle:
            handle.write(body)
    except OSError:
        unstage(staging)
        raise
    return staging


def unstage(staging: str) -> None:
    """Remove a staged directory whose job was not committed."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(staging):
            os.unlink(entry.path)
        os.rmdir(staging)


def publish(staging: str, job_dir: str) -> None:
    """Rename a committed job's staged directory into place. Raises OSError."""
    osdeps.replace_file(staging, job_dir)


def write_meta(job_dir: str, body: bytes) -> None:
    """Replace meta.json atomically (tmp + rename): readers see the old or the new file, never half
    of one. Recreates a directory that went missing. Raises OSError, leaving no tmp file behind."""
    tmp = os.path.join(job_dir, f"{META}.{uuid.uuid4().hex}.tmp")
    try:
        handle = open(tmp, "wb")  # noqa: SIM115 - closed below, before the rename
    except FileNotFoundError:
        os.makedirs(job_dir, exist_ok=True)
        handle = open(tmp, "wb")  # noqa: SIM115
    try:
        with handle:
            handle.write(body)
        osdeps.replace_file(tmp, os.path.join(job_dir, META))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync(path: str) -> None:
    """fsync a file the caller is done writing (a job's output before its end is recorded); an empty
    or missing one costs an open at most. Raises OSError."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # write access: Windows flushes only then
    except FileNotFoundError:
        return
    try:
        if os.fstat(fd).st_size:
            os.fsync(fd)
    finally:
        os.close(fd)


def scan(jobs_dir: Path, warn: list[str]) -> Iterator[Job]:
    """Every job whose directory holds a readable meta.json (for a rebuild of the store); what is
    skipped is described in `warn`. Dot-names are the server's own (.trash, .new-<id>, the database)."""
    for entry in os.scandir(jobs_dir):
        if entry.name.startswith("."):
            continue
        if not is_job_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            warn.append(f"{entry.name!r}: not a job directory")
            continue
        try:
            job = Job.from_dict(orjson.loads(osdeps.read_bytes(os.path.join(entry.path, META))))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            warn.append(f"{entry.name}: unreadable meta.json ({exc})")
            continue
        if job.id != entry.name:
            warn.append(f"{entry.name}: its meta.json belongs to job {job.id}")
            continue
        yield job
