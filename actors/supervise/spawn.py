"""Building and starting a job's child: its argv without a shell, its directory, its environment."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from procq.actors import osdeps
from procq.actors.job import Job
from procq.actors.jobdir import JobDir
from procq.actors.resources.node import Node

Spawn = Callable[[Job, JobDir, int], "subprocess.Popen[bytes]"]


def spawn_child(job: Job, jobdir: JobDir, attempt: int) -> subprocess.Popen[bytes]:
    """Start the job's command without a shell, in its own directory and process group, its output
    going straight into the job's files (no Python loop copies it)."""
    stdout, stderr = jobdir.open_outputs(attempt)
    with stdout, stderr:  # the child holds its own copies; ours close once it is started
        return subprocess.Popen(
            list(job.args),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=job.cwd or jobdir.path,
            env=child_environment({**os.environ, **job.env}),
            **osdeps.spawn_kwargs(),
        )


def with_visible_devices(job: Job, node: Node) -> Job:
    """The job as its child is started: on a node with GPUs, its env shows exactly the GPUs it was
    assigned (none if it asked for none), whatever its own env says about them."""
    if not node.manages_gpus:
        return job
    gpus = (job.assigned or {}).get("gpus", [])
    return dataclasses.replace(job, env={**job.env, **node.visible_devices(gpus)})


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment without its own settings and secrets (every PROCQ_* variable)."""
    return {name: value for name, value in environ.items() if not name.upper().startswith("PROCQ_")}


def resolve_cwd(root: Path | None, cwd: str) -> Path:
    """The directory `cwd` names inside `root` (relative to it, or absolute), symlinks resolved.
    Raises ValueError saying why when there is no root, or it is missing, not a directory, or outside.
    Checked when a job is submitted and again just before it starts (the directory may have been
    swapped for a symlink meanwhile)."""
    if root is None:
        raise ValueError("cwd: this server has no --cwd-root, so jobs run in their own directory only")
    base = root.resolve()
    # One answer for missing, outside and not-a-directory: saying which would tell a client whether a
    # path outside the root exists.
    refusal = ValueError(f"cwd: {cwd!r} is not an existing directory inside the cwd root")
    try:
        path = (base / cwd).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise refusal from exc
    if not path.is_relative_to(base) or not path.is_dir():
        raise refusal
    return path
