"""`procq batch`: many jobs from a file or stdin, one JSON body or command line per line, in one request per 1,000."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

import click

from procq.client.client import Client
from procq.client.errors import ProcqError
from procq.client.terminal import err, fail, print_json


@click.command()
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print the job objects as JSON.")
@click.option("--queue", "-q", help="Queue for jobs whose line names none.")
@click.option("--tag", "-t", "tags", multiple=True, help="Tag every job (repeatable; added to a line's own).")
@click.pass_obj
def batch(client: Client, source: Any, as_json: bool, queue: str | None, tags: tuple[str, ...]) -> None:
    """Submit many jobs at once from SOURCE (a file, or - for stdin; default stdin).

    One job per line: a JSON object as POST /jobs takes it, or a command line (split like a POSIX
    shell does, but run without one). Blank lines and lines starting with # are skipped.

        printf 'echo one\\n{"args": ["echo", "two"], "priority": 5}\\n' | procq batch

    Up to 1,000 jobs go in one request, all or nothing; an invalid line stops the submit and is named.
    Prints the new job ids, one per line (or JSON).
    """
    bodies: list[dict[str, Any]] = []
    lines: list[int] = []  # the line number of each body, to name a bad one
    for number, line in enumerate(source, start=1):
        try:
            body = parse_line(line)
        except ValueError as exc:
            raise click.BadParameter(f"line {number}: {exc}", param_hint="SOURCE") from exc
        if body is None:
            continue
        if queue is not None:
            body.setdefault("queue", queue)
        if tags:
            body["tags"] = [*body.get("tags", []), *tags]
        bodies.append(body)
        lines.append(number)
    if not bodies:
        raise click.BadParameter("no jobs in it (one JSON object or command line per line)", param_hint="SOURCE")
    try:
        jobs = client.submit_many(bodies)
    except ProcqError as exc:
        fail(ProcqError(name_line(str(exc), lines)))
    if as_json:
        print_json([job.to_dict() for job in jobs])
        return
    err.print(f"submitted {len(jobs)} jobs")
    for job in jobs:
        click.echo(job.id)


_INDEX = re.compile(r"jobs\[(\d+)\]")


def parse_line(line: str) -> dict[str, Any] | None:
    """The job body a line stands for, or None for a blank or comment line. Raises ValueError."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return body
    args = shlex.split(text, comments=False, posix=True)
    return {"args": args}


def name_line(message: str, lines: Sequence[int]) -> str:
    """The server names a bad item as jobs[i] in its batch; say which line of the file that was."""

    def line_of(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"{match.group(0)} (line {lines[index]})" if index < len(lines) else match.group(0)

    return _INDEX.sub(line_of, message, count=1)
