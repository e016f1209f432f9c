"""Building and starting a job's child: its argv without a shell, its directory, its environment.

The keeper starts it (it is the child's OS parent, so the job outlives a crash of the server); the
output goes straight into the job's files, opened by the keeper (no Python loop copies it)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from procq.actors import osdeps
from procq.actors.job import Job
from procq.actors.jobdir import JobDir
from procq.actors.resources.node import Node

if TYPE_CHECKING:
    from procq.actors.keeper.link import KeeperLink


@dataclass(frozen=True, slots=True)
class Started:
    """The root process of a run: its pid and start time (its identity, with the boot)."""

    pid: int
    pid_started_at: float


Spawn = Callable[[Job, JobDir, int], Started]


def through_keeper(keeper: KeeperLink, run_as: osdeps.RunAs | None = None) -> Spawn:
    """The spawner of a server: the keeper starts attempt `attempt` of the job, marked with its run,
    as the user `run_as` if given (who then owns the job's directory and output files)."""

    def spawn(job: Job, jobdir: JobDir, attempt: int) -> Started:
        jobdir.keep_earlier_outputs(attempt)
        user_env = run_as.env() if run_as is not None else {}
        env = child_environment({**os.environ, **user_env, **job.env})
        cwd = Path(job.cwd) if job.cwd else None
        started = keeper.spawn(job.id, attempt, list(job.args), env, cwd, run_as.name if run_as else None)
        return Started(started["pid"], started["pid_started_at"])

    return spawn


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
