"""One job's directory: meta.json written atomically, the output files, and what earlier runs left."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import BinaryIO

from procq.actors import osdeps
from procq.actors.job import Job

STAGING_PREFIX = ".new-"


class JobDir:
    """The files of one job under jobs/<id>/. Only one actor writes them at a time: the Dispatcher
    while the job has no Supervisor, the Supervisor while it has one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = path / "meta.json"
        self.stdout = path / "stdout.txt"
        self.stderr = path / "stderr.txt"

    def create(self, job: Job) -> None:
        """Make the directory and its first meta.json, durably. Raises OSError; leaves nothing behind.

        Built as .new-<id>/ and renamed into place, so a crash half way never leaves a job directory
        without its meta.json (recovery ignores dot-names; sweep_leftovers removes stale ones)."""
        staging = JobDir(self.path.with_name(f"{STAGING_PREFIX}{self.path.name}"))
        staging.path.mkdir()
        try:
            staging.write(job)
            osdeps.replace_file(staging.path, self.path)
            osdeps.fsync_dir(self.path.parent)
        except OSError:
            with contextlib.suppress(OSError):
                staging.remove_partial()
            raise

    def write(self, job: Job) -> None:
        """Replace meta.json atomically: readers see the old or the new file, never half of one."""
        data = json.dumps(job.to_dict(), separators=(",", ":")).encode("utf-8")
        tmp = self.path / f"meta.json.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            osdeps.replace_file(tmp, self.meta)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def read(self) -> Job:
        """The job in meta.json. Raises OSError, or ValueError/TypeError/KeyError if it is not a job."""
        return Job.from_dict(json.loads(osdeps.read_bytes(self.meta)))

    def open_outputs(self, attempt: int) -> tuple[BinaryIO, BinaryIO]:
        """Fresh stdout.txt and stderr.txt for run number `attempt`; an earlier run's files are kept
        as stdout.<n>.txt / stderr.<n>.txt so a rerun never mixes its output with theirs."""
        self.keep_earlier_outputs(attempt)
        stdout = open(self.stdout, "wb")  # noqa: SIM115 - handed to the child, closed by the caller
        try:
            return stdout, open(self.stderr, "wb")  # noqa: SIM115
        except OSError:
            stdout.close()
            raise

    def keep_earlier_outputs(self, attempt: int) -> None:
        """Before run number `attempt` (> 1) starts: the last run's stdout.txt and stderr.txt become
        stdout.<n>.txt / stderr.<n>.txt, so a rerun never mixes its output with theirs."""
        if attempt > 1:
            for current in (self.stdout, self.stderr):
                if current.exists():
                    osdeps.replace_file(current, current.with_suffix(f".{attempt - 1}.txt"))

    def remove_partial(self) -> None:
        """Undo a create() that failed half way."""
        for entry in self.path.iterdir():
            entry.unlink(missing_ok=True)
        self.path.rmdir()
