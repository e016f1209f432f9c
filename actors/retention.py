"""Removing job directories (DELETE /jobs/{id} and retention), safely, on a helper thread."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Container, Iterable
from pathlib import Path

from procq.actors import osdeps
from procq.actors.job import Job, is_job_id

log = logging.getLogger("procq.retention")

TRASH = ".trash"  # inside the jobs directory; a leading dot keeps recovery away from it
BATCH = 1000  # jobs removed per sweep at most, so one sweep never holds the Dispatcher long
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in '604800', '3600s', '30m', '12h' or '7d'. Raises ValueError naming what is allowed."""
    match = _DURATION.fullmatch(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration: use seconds (3600) or a number with s, m, h or d (7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]


def sweep_interval(retention_s: float) -> float:
    """How often the Dispatcher looks for expired jobs: a tenth of the retention, 0.5 s to 60 s."""
    return min(60.0, max(0.5, retention_s / 10)) if retention_s > 0 else 60.0


def expired(finished: Iterable[Job], cutoff: str, delivering: Container[str], limit: int) -> list[Job]:
    """Up to `limit` of the `finished` jobs completed before `cutoff` (a timestamp; they compare as
    strings) whose webhook is not owed: one still pending or in flight keeps its job."""
    found: list[Job] = []
    for job in finished:
        delivery = job.webhook_delivery
        if job.completed_at is None or job.completed_at >= cutoff or job.id in delivering:
            continue
        if delivery is not None and delivery.state == "pending":
            continue
        found.append(job)
        if len(found) >= limit:
            break
    return found


def remove_jobs(
    jobs_dir: Path,
    jobs: list[Job],
    report: Callable[[list[str]], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Helper thread: remove each job's directory, then call `report(postponed_ids)` with the ids
    whose directory could not be moved away yet (Windows: a file still open), to retry later.

    A directory is first renamed into jobs/.trash/ (atomic: the job vanishes whole, and a restart
    never finds half a job), then the trash is emptied. Never follows a symlink, never leaves jobs_dir.
    """
    trash = jobs_dir / TRASH
    postponed: list[str] = []
    for job in jobs:
        if job.pid is not None and job.pid_started_at is not None:
            # A grandchild that outlived the job would keep its files open (WINDOWS.md §2, §4).
            osdeps.stop_tree(job.pid, job.pid_started_at, 0.0)
        if not _move_to_trash(jobs_dir, trash, job.id, sleep):
            postponed.append(job.id)
    empty_trash(trash, sleep)
    report(postponed)


def empty_trash(trash: Path, sleep: Callable[[float], None] = time.sleep) -> None:
    """Delete what earlier removals (or a crash in the middle of one) left in jobs/.trash/."""
    try:
        entries = list(os.scandir(trash))
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot read %s: %s", trash, exc)
        return
    for entry in entries:
        try:
            _retry(lambda path=entry.path: _delete_entry(path), sleep)
        except OSError as exc:
            log.warning("could not delete %s yet (%s); retrying at the next sweep", entry.path, exc)


def _move_to_trash(jobs_dir: Path, trash: Path, job_id: str, sleep: Callable[[float], None]) -> bool:
    if not is_job_id(job_id):  # never build a path from anything else
        log.error("refusing to remove %r: not a job id", job_id)
        return True
    path = jobs_dir / job_id
    try:
        plain = osdeps.is_plain_dir(path)
        if not plain and not os.path.lexists(path):
            return True  # already gone
    except OSError as exc:
        log.warning("job %s: cannot inspect its directory, retrying later: %s", job_id, exc)
        return False
    if not plain:  # a symlink, junction or file planted there: not ours to follow or delete
        log.error("job %s: %s is not a plain directory; left alone", job_id, path)
        return True
    try:
        trash.mkdir(exist_ok=True)
        osdeps.replace_file(path, trash / f"{job_id}-{uuid.uuid4().hex[:8]}")  # retries while Windows holds it
    except OSError as exc:
        log.warning("job %s: could not remove its directory yet (%s); retrying at the next sweep", job_id, exc)
        return False
    return True


def _delete_entry(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # rmtree removes symlinks inside without following them
    else:
        os.unlink(path)


def _retry(action: Callable[[], None], sleep: Callable[[float], None], budget_s: float = 2.0) -> None:
    """Run `action`, retrying transient (Windows sharing) errors for up to `budget_s`; logs and
    gives up on anything else, leaving the entry for the next sweep."""
    delay, spent = 0.01, 0.0
    while True:
        try:
            action()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if not osdeps.is_transient(exc) or spent >= budget_s:
                raise
        sleep(delay)
        spent += delay
        delay = min(delay * 2, 0.2)
