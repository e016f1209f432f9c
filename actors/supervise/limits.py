"""A run's limits (timeout, memory, output): when one is passed, what the job's error says, and the cut files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from procq.actors.job import Job
from procq.actors.supervise.sampler import Sample

log = logging.getLogger("procq.limits")


def exceeded(job: Job, sample: Sample) -> str | None:
    """The error a job ends with because this sample passes its memory or output limit, or None."""
    if job.max_memory_bytes is not None and sample.rss_bytes > job.max_memory_bytes:
        return (
            f"memory limit exceeded: the process tree used {sample.rss_bytes} bytes of resident memory "
            f"(max_memory_bytes {job.max_memory_bytes}); it was ended"
        )
    if job.max_output_bytes is not None and sample.output_bytes > job.max_output_bytes:
        return (
            f"output limit exceeded: stdout and stderr reached {sample.output_bytes} bytes "
            f"(max_output_bytes {job.max_output_bytes}); the tree was ended and the files cut to the limit"
        )
    return None


def timed_out(job: Job) -> str:
    """The error of a job still running after its timeout_seconds."""
    return f"timed out: still running after timeout_seconds {job.timeout_seconds:g}; the process tree was ended"


def truncate_outputs(stdout: Path, stderr: Path, limit: int) -> None:
    """Cut the output files to `limit` bytes together: stdout keeps up to all of it, stderr the rest."""
    kept = 0
    for path in (stdout, stderr):
        try:
            size = path.stat().st_size
            if size > limit - kept:
                os.truncate(path, limit - kept)
            kept += min(size, limit - kept)
        except OSError as exc:
            log.error("could not truncate %s to the output limit: %s", path, exc)
