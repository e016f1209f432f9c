"""run.py's argument parser: --help in sections, and errors in one line that name where a bad value came from."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from procq.server.config import ConfigSource

# The --help sections, in order, and the flags in each; a flag not named here stays under "options".
GROUPS = {
    "Network": ("--host", "--port", "--threads", "--max-streams", "--max-body-bytes"),
    "Jobs": ("--jobs-dir", "--workers", "--grace", "--restart-limit", "--retention", "--max-queued"),
    "Deciding what runs": (
        "--queue", "--aging-seconds", "--timeout", "--max-output-bytes", "--sample-interval", "--cwd-root",
    ),
    "Webhooks": (
        "--webhook-attempts", "--webhook-backoff", "--webhook-backoff-cap", "--webhook-timeout",
        "--webhook-concurrency", "--webhook-secret", "--webhook-deny-private",
    ),
    "Security": ("--keys-file", "--insecure-no-auth", "--allow-command"),
    "Logging": ("--log-level", "--log-format"),
    "Cluster (several nodes on one PostgreSQL)": (
        "--database-url", "--database-url-file", "--node-name", "--cluster-output-cap", "--lease",
    ),
}  # fmt: skip


def grouped(parser: argparse.ArgumentParser) -> Callable[..., Any]:
    """parser.add_argument, but each flag lands in its --help section (GROUPS)."""
    sections = {name: parser.add_argument_group(name) for name in GROUPS}
    where = {flag: sections[name] for name, flags in GROUPS.items() for flag in flags}

    def add(flag: str, *more: str, **kwargs: Any) -> Any:
        return where.get(flag, parser).add_argument(flag, *more, **kwargs)

    return add


class FlagParser(argparse.ArgumentParser):
    """Errors as one line, not the usage of 30 flags first; a bad value from a PROCQ_* variable or the
    TOML file is named as written there, not as the flag it stands for."""

    def __init__(self, argv: list[str] | None, env: ConfigSource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._argv = sys.argv[1:] if argv is None else argv
        self._env = env

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        found = re.match(r"argument (--[\w-]+)(?:/[^:]*)?: (.*)", message)
        if found:
            flag, problem = found.groups()
            given = any(arg == flag or arg.startswith(flag + "=") for arg in self._argv)
            origin = None if given else self._env.origin(flag[2:].replace("-", "_"))
            if origin:
                message = f"{origin}: {problem.replace('invalid ', 'not a valid ', 1)} (the setting {flag})"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")
