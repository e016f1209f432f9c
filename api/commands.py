"""--allow-command: which executables jobs may run, compared as resolved absolute paths."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping

import falcon


def resolve(command: str, path_var: str | None) -> str | None:
    """The real file the server would start for `command`: a bare name is looked up on the child's
    PATH (as subprocess does), an absolute path is taken as is; then symlinks are resolved, so a
    link to an allowed program is that program and a link elsewhere is not. None if it cannot run."""
    if os.path.isabs(command):
        found = command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    elif os.sep in command or (os.altsep and os.altsep in command):
        return None  # relative to the job's directory: never what an operator allowed
    else:
        found = shutil.which(command, path=path_var)
    return os.path.realpath(found) if found else None


class CommandPolicy:
    """Allowed executables, by name or absolute path. Empty: every command may run (the default)."""

    def __init__(self, allowed: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        self._path_var = (environ if environ is not None else os.environ).get("PATH")
        self.allowed = tuple(allowed)
        self.unresolved = tuple(entry for entry in self.allowed if resolve(entry, self._path_var) is None)

    def check(self, args: tuple[str, ...]) -> None:
        """Raise 403 naming the command unless it resolves to one of the allowed executables.
        Entries are resolved on every check, so an upgrade that moves a program is followed."""
        if not self.allowed:
            return
        command = args[0]
        real = resolve(command, self._path_var)
        if real is not None and real in {resolve(entry, self._path_var) for entry in self.allowed}:
            return
        raise falcon.HTTPForbidden(
            title="Command not allowed",
            description=f"The command {command!r} is not allowed on this server; allowed: "
            f"{', '.join(self.allowed)} (by name on the server's PATH, or by absolute path).",
        )
