"""What the `procq` command shows: the live waiting line, Ctrl+C handling, and how a waited-for job ends."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from procq.client import render
from procq.client.client import Client
from procq.client.errors import ProcqError
from procq.client.job import Job

# People read stderr while stdout carries what scripts consume (an id, a result, JSON).
# Into a pipe or a file nothing is wrapped at 80 columns: what a script greps must be whole.
err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
out = Console(highlight=False, soft_wrap=not sys.stdout.isatty())

EXIT_ERROR = 1  # the server refused, or could not be reached; the message says which


def wait_with_spinner(client: Client, job: Job, timeout: float | None = None) -> Job:
    """Wait for the job with a live line on stderr: spinner, id, state, elapsed time."""
    if not err.is_terminal:  # nobody watches a spinner in a log file
        return client.wait(job.id, timeout)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(_waiting_line(job))
        return client.wait(job.id, timeout, on_change=lambda j: progress.update(task, description=_waiting_line(j)))


def _waiting_line(job: Job) -> str:
    style, symbol = render.STATE_STYLES.get(job.status, ("white", "?"))
    return f"job {job.id} [{style}]{symbol} {job.status}[/]"


@contextmanager
def interruptible(client: Client, job_id: str, cancel_on_interrupt: bool) -> Iterator[None]:
    """Ctrl+C while waiting: cancel the job if asked to (or if the user says so), else leave it
    running and say how to find it again. Either way exit with 130, as a shell would."""
    try:
        yield
    except KeyboardInterrupt:
        err.print()
        if cancel_on_interrupt or confirm(f"Cancel job {job_id}?"):
            try:
                job = client.cancel(job_id)
                err.print(f"job {job.id}", render.state(job.status))
            except ProcqError as exc:
                fail(exc)
        else:
            err.print(f"job {job_id} keeps running; follow it with: procq logs -f {job_id}")
        sys.exit(render.EXIT_CANCELED)


def confirm(question: str) -> bool:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False  # nobody to ask: leave the job alone
    try:
        return click.confirm(question, default=False, err=True)
    except (click.Abort, KeyboardInterrupt):
        return False


def finish(client: Client, job: Job, as_json: bool, show_stderr: bool) -> NoReturn:
    """After waiting: print the result (or the job as JSON), a line about how it ended, the job's
    stderr if it failed, and exit with the job's exit code."""
    if as_json:
        print_json(job.to_dict())
    elif job.status == "COMPLETED":
        sys.stdout.flush()
        sys.stdout.buffer.write(client.result(job.id))
        sys.stdout.flush()
    if job.status != "COMPLETED":
        if show_stderr and not as_json:
            try:
                for chunk in client.logs(job.id):
                    sys.stderr.write(chunk)
            except ProcqError as exc:  # the exit code matters more than the log: say why it is missing
                err.print(Text(f"(no stderr: {exc})", style="dim"), soft_wrap=True)
        line = Text.assemble(f"job {job.id} ", render.state(job.status))
        if job.exit_code is not None:
            line.append(f" (exit code {job.exit_code})")
        if job.error:
            line.append(f": {job.error}")
        err.print(line, soft_wrap=True)
    sys.exit(render.exit_code(job))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def fail(exc: ProcqError) -> NoReturn:
    message = str(exc)
    if exc.status == 401:
        message += " Give a key with --key or the PROCQ_KEY variable."
    # Text: a description may contain [brackets]
    err.print(Text.assemble(("procq: ", "bold red"), message), soft_wrap=True)
    sys.exit(EXIT_ERROR)
