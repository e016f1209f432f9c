"""Running jobs as another user (--run-as, POSIX when started as root)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procq.actors.osdeps.common import WINDOWS


@dataclass(frozen=True, slots=True)
class RunAs:
    """The user jobs run as (--run-as): who they are, and what their environment says about it."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self) -> dict[str, str]:
        """HOME, USER and LOGNAME of that user (the server's own would point programs at root's files)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def lookup_run_as(name: str, windows: bool = WINDOWS, euid: int | None = None) -> RunAs:
    """The user `name` jobs may be run as. Raises ValueError with one sentence saying why not: on
    Windows (run the service as that user instead), when this process is not root (it could not
    switch), or when there is no such user."""
    if windows:
        raise ValueError("--run-as works on POSIX only; on Windows run the procq service as that user instead")
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise ValueError(
            f"--run-as needs the server started as root to switch users (it runs as uid {euid}); "
            f"start it as root, or start it as {name!r} without --run-as"
        )
    import pwd  # POSIX only

    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise ValueError(f"--run-as: there is no user {name!r} on this system") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid)) - {entry.pw_gid}))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/")


def run_as_kwargs(run_as: RunAs | None) -> dict[str, Any]:
    """Popen kwargs that start the child as `run_as` (its uid, primary group and only its own groups:
    the server's supplementary groups are dropped). Nothing when run_as is None."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}


def give_to(paths: list[Path], run_as: RunAs | None) -> None:
    """Make `run_as` own each path (never through a symlink), so a job may write its directory and
    files; the jobs directory and meta.json stay the server's. Nothing when run_as is None."""
    if run_as is None:
        return
    for path in paths:
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)
