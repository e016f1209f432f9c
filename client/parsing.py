"""What the `procq` command reads from its user: job ids or unique prefixes of them, NAME=VALUE pairs,
sizes like 512M, and commands that look like they expect a shell."""

from __future__ import annotations

import re

import click

from procq.client.client import Client
from procq.client.errors import JobNotFound, ProcqError

FULL_ID = re.compile(r"[0-9a-f]{32}")
_SIZES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SHELL = re.compile(r"[|&;<>()$`*?~]|\s")  # what only a shell would make sense of in one argument


def resolve(client: Client, text: str) -> str:
    """The full id of the one job whose id starts with `text` (`procq status 01a231cc`). A full id is
    used as it is. Raises JobNotFound when none matches, ProcqError when several do."""
    text = text.strip().lower()
    if FULL_ID.fullmatch(text) or not re.fullmatch(r"[0-9a-f]{1,31}", text):
        return text  # a full id, or not an id at all: the server says what is wrong with it
    found = [job.id for job in client.list(search=text, page_size=50, limit=50) if job.id.startswith(text)]
    if not found:
        raise JobNotFound(f"no job id starts with {text!r}", status=404, title="Unknown job")
    if len(found) > 1:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ProcqError(f"more than one job id starts with {text!r} ({shown}); give more characters")
    return found[0]


def env_pairs(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """--env NAME=VALUE (repeatable) as the job's `env` object."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--env")
        env[name] = value
    return env or None


def size(text: str | None) -> int | None:
    """A byte count: 1048576, 512K, 512M, 2G (powers of 1024; a trailing B or iB is allowed)."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not found:
        raise click.BadParameter(f"{text!r}: expected a number of bytes such as 1048576, 512M or 2G")
    return int(float(found[1]) * _SIZES[found[2].upper()])


def shell_hint(args: list[str]) -> str | None:
    """A hint when the command looks written for a shell (`procq submit "ls | wc -l"`): procq has none."""
    if args and _SHELL.search(args[0]):
        quoted = " ".join(args).replace("'", "'\\''")
        return (
            f"procq runs commands with no shell; for pipes, redirections or globs use: procq submit -- sh -c '{quoted}'"
        )
    return None
