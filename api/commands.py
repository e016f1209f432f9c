"""--allow-command: which executables jobs may run, compared as resolved absolute paths."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from procq.actors.errors import CommandNotAllowed, VariableNotAllowed

# Variables that make an allowed program load or run other code (dynamic loader, shells, interpreters),
# or look its tools up elsewhere. With an allow-list, a job may not set them (the `env` field).
INJECTING_ENV = re.compile(
    r"LD_.*|DYLD_.*|PATH|PATHEXT|COMSPEC|IFS|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|PYTHON.*|NODE_OPTIONS|NODE_PATH"
    r"|PERL5OPT|PERL5LIB|PERLLIB|RUBYOPT|RUBYLIB|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|GCONV_PATH"
    r"|LOCPATH|HOSTALIASES|RESOLV_HOST_CONF|GIT_.*|TMPDIR",
    re.IGNORECASE,
)


def resolve(command: str, path_var: str | None) -> str | None:
    """The absolute path the server would start for `command`: a bare name is looked up on the child's
    PATH (as subprocess does), an absolute path is taken as is. None if it cannot run there."""
    if os.path.isabs(command):
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    if os.sep in command or (os.altsep and os.altsep in command):
        return None  # relative to the job's directory: never what an operator allowed
    return shutil.which(command, path=path_var)


class CommandPolicy:
    """Allowed executables, by name or absolute path. Empty: every command may run (the default)."""

    def __init__(self, allowed: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        self._path_var = (environ if environ is not None else os.environ).get("PATH")
        self.allowed = tuple(allowed)
        self.unresolved = tuple(entry for entry in self.allowed if resolve(entry, self._path_var) is None)

    def check(self, args: tuple[str, ...], env_names: Iterable[str] = ()) -> tuple[str, ...]:
        """The args to run: unchanged without an allow-list; else with the command replaced by the
        absolute path that was checked, so the job runs exactly that file whatever PATH it sees.
        Symlinks are resolved for the comparison: a link to an allowed program is that program, a link
        named like one but pointing elsewhere is not. Entries are resolved on every check, so an
        upgrade that moves a program is followed. Raises CommandNotAllowed or VariableNotAllowed."""
        if not self.allowed:
            return args
        command = args[0]
        found = resolve(command, self._path_var)
        allowed = {os.path.realpath(path) for entry in self.allowed if (path := resolve(entry, self._path_var))}
        if found is None or os.path.realpath(found) not in allowed:
            raise CommandNotAllowed(command, self.allowed)
        for name in env_names:
            if INJECTING_ENV.fullmatch(name):
                raise VariableNotAllowed(name)
        return (found, *args[1:])

    def apply(self, request: Any) -> Any:
        """The JobRequest with its command checked (and made absolute when an allow-list is set)."""
        env = getattr(request, "env", None) or ()  # a mapping or (name, value) pairs
        names = list(env) if isinstance(env, Mapping) else [pair[0] for pair in env]
        return dataclasses.replace(request, args=self.check(request.args, names))
