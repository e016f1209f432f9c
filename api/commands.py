"""--allow-command: which executables jobs may run, compared as resolved absolute paths."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from procq.actors import osdeps
from procq.actors.errors import CommandNotAllowed, VariableNotAllowed

# Variables that make an allowed program load or run other code (dynamic loader, shells, interpreters),
# or look its tools up elsewhere. No deny-list is complete (OPENSSL_CONF, LUA_INIT, PHPRC, HOME, ...), so
# with --allow-command a job may set only the variables --allow-env names; these stay refused even then
# unless a pattern names them exactly.
INJECTING_ENV = re.compile(
    r"LD_.*|DYLD_.*|PATH|PATHEXT|COMSPEC|IFS|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|PYTHON.*|NODE_OPTIONS|NODE_PATH"
    r"|PERL5OPT|PERL5LIB|PERLLIB|RUBYOPT|RUBYLIB|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|GCONV_PATH"
    r"|LOCPATH|HOSTALIASES|RESOLV_HOST_CONF|GIT_.*|TMPDIR",
    re.IGNORECASE,
)


def resolve(command: str, path_var: str | None, pathext: str | None = None) -> str | None:
    """The absolute path the server would start for `command`: a bare name is looked up on the child's
    PATH (as subprocess does), an absolute path is taken as is. None if it cannot run there. With
    `pathext` (Windows), a name without one of its extensions also matches name + extension, as
    Windows finds `npm.CMD` for `npm`."""
    if pathext is not None:
        return _resolve_windows(command, path_var, pathext)
    if os.path.isabs(command):
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    if os.sep in command or (os.altsep and os.altsep in command):
        return None  # relative to the job's directory: never what an operator allowed
    return shutil.which(command, path=path_var)


def _resolve_windows(command: str, path_var: str | None, pathext: str) -> str | None:
    extensions = [ext for ext in pathext.split(";") if ext]
    names = [command] if any(command.lower().endswith(ext.lower()) for ext in extensions) else []
    names += [command + ext for ext in extensions]
    if os.path.isabs(command):
        return next((name for name in names if os.path.isfile(name)), None)
    if "/" in command or "\\" in command:
        return None
    for directory in (path_var or "").split(os.pathsep):
        for name in names:
            if directory and os.path.isfile(candidate := os.path.join(directory, name)):
                return candidate
    return None


class CommandPolicy:
    """Allowed executables, by name or absolute path. Empty: every command may run (the default)."""

    def __init__(
        self,
        allowed: Iterable[str],
        environ: Mapping[str, str] | None = None,
        allowed_env: Iterable[str] = (),
        windows: bool = osdeps.WINDOWS,
    ) -> None:
        environ = environ if environ is not None else os.environ
        self._path_var = environ.get("PATH")
        self._pathext = environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD") if windows else None
        self._windows = windows
        self.allowed = tuple(allowed)
        self.allowed_env = tuple(allowed_env)
        self.unresolved = tuple(entry for entry in self.allowed if self._resolve(entry) is None)

    def _resolve(self, command: str) -> str | None:
        return resolve(command, self._path_var, self._pathext)

    def env_allowed(self, name: str) -> bool:
        """Whether a job may set `name` (--allow-env patterns, `*` and `?` as in shells)."""
        if not any(fnmatch.fnmatchcase(name.upper(), pattern.upper()) for pattern in self.allowed_env):
            return False
        return not INJECTING_ENV.fullmatch(name) or any(p.upper() == name.upper() for p in self.allowed_env)

    def check(self, args: tuple[str, ...], env_names: Iterable[str] = ()) -> tuple[str, ...]:
        """The args to run: unchanged without an allow-list; else with the command replaced by the
        absolute path that was checked, so the job runs exactly that file whatever PATH it sees.
        Symlinks are resolved for the comparison: a link to an allowed program is that program, a link
        named like one but pointing elsewhere is not. Entries are resolved on every check, so an
        upgrade that moves a program is followed. Raises CommandNotAllowed or VariableNotAllowed."""
        if not self.allowed:
            return args
        command = args[0]
        found = self._resolve(command)
        allowed = {os.path.realpath(path) for entry in self.allowed if (path := self._resolve(entry))}
        if found is None or os.path.realpath(found) not in allowed:
            raise CommandNotAllowed(command, self.allowed)
        # The file that will actually run decides: `npm` found as npm.CMD is a batch file.
        refusal = osdeps.command_refusal([found], windows=self._windows)
        if refusal is not None:
            raise CommandNotAllowed(command, self.allowed, reason=refusal)
        for name in env_names:
            if not self.env_allowed(name):
                raise VariableNotAllowed(name, self.allowed_env)
        return (found, *args[1:])

    def apply(self, request: Any) -> Any:
        """The JobRequest with its command checked (and made absolute when an allow-list is set)."""
        env = getattr(request, "env", None) or ()  # a mapping or (name, value) pairs
        names = list(env) if isinstance(env, Mapping) else [pair[0] for pair in env]
        return dataclasses.replace(request, args=self.check(request.args, names))
