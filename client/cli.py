"""The `procq` command line: submit, watch and fetch jobs, manage keys (`procq serve` is added by procq.server)."""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Any

import click

from procq.client import render
from procq.client.batchcommand import batch
from procq.client.client import DEFAULT_URL, Client
from procq.client.errors import ProcqError, WaitTimeout
from procq.client.job import STATES
from procq.client.keycommands import keys
from procq.client.parsing import env_pairs, resolve, shell_hint, size
from procq.client.servercommands import queues, stats
from procq.client.terminal import err, fail, finish, interruptible, out, print_json, wait_with_spinner

EXIT_WAIT_TIMEOUT = 124  # like timeout(1)


def _version() -> str:
    try:
        return importlib.metadata.version("procq")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without `pip install`
        return "(not installed)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="PROCQ_URL", default=DEFAULT_URL, show_default=True, help="Server URL [PROCQ_URL].")
@click.option("--key", envvar="PROCQ_KEY", default=None, help="API key, if the server requires one [PROCQ_KEY].")
@click.version_option(version=_version(), prog_name="procq", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None) -> None:
    """procq: run commands as jobs on a procq server, watch them and fetch their results."""
    ctx.obj = ctx.with_resource(Client(url, key))


def main() -> None:
    """The console script's entry point: runs the command, turning server errors into a message and
    exit status 1 instead of a traceback."""
    try:
        cli.main(prog_name="procq", standalone_mode=True)
    except ProcqError as exc:  # raised inside commands; click re-raises what it does not know
        fail(exc)


# -- jobs ----------------------------------------------------------------------------------------------


# Options after the command belong to it: `procq submit --wait python -c ...` passes -c to python.
@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--wait", "-w", "wait_", is_flag=True, help="Wait for the job; print its result; exit with its code.")
@click.option("--follow", "-f", is_flag=True, help="Stream the job's stderr while waiting (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the job object as JSON.")
@click.option("--priority", "-p", type=int, help="Higher runs first (-1000..1000).")
@click.option("--timeout", "timeout_seconds", type=float, help="End the job after this many seconds.")
@click.option("--delay", "delay_seconds", type=float, help="Start no earlier than this many seconds from now.")
@click.option("--queue", "-q", help="Queue to run in.")
@click.option("--tag", "-t", "tags", multiple=True, help="Tag the job (repeatable).")
@click.option("--mime-type", help="Content-Type of the result.")
@click.option("--webhook", help="URL to POST to when the job finishes.")
@click.option("--max-attempts", type=click.IntRange(1, 100), help="Run a failed attempt again until this many ran.")
@click.option("--retry-backoff", "retry_backoff_seconds", type=float, help="Seconds before the first retry.")
@click.option("--env", "-e", "env", multiple=True, metavar="NAME=VALUE", help="Set a variable (repeatable).")
@click.option("--after", multiple=True, metavar="ID", help="Start only once this job COMPLETED (repeatable).")
@click.option("--cwd", help="Working directory, inside the server's --cwd-root.")
@click.option("--memory", "max_memory_bytes", metavar="SIZE", help="Memory limit of the tree, e.g. 512M, 2G.")
@click.option("--max-output", "max_output_bytes", metavar="SIZE", help="Limit on stdout + stderr, e.g. 100M.")
@click.option("--gpus", type=click.IntRange(min=0), help="GPUs the job needs; it sees only the ones it is given.")
@click.option(
    "--require", "requires", multiple=True, metavar="NAME=N", help="Units of a server resource it needs (repeatable)."
)
@click.option("--cancel-on-interrupt", is_flag=True, help="Cancel the job on Ctrl+C without asking.")
@click.pass_obj
def submit(client: Client, args: tuple[str, ...], wait_: bool, follow: bool, as_json: bool, **options: Any) -> None:
    """Submit a command (run without a shell) as a job.

    Put `--` before the command so its own options are not read as procq's:

        procq submit --wait -- python -c "print(6 * 7)"

    Prints the job id (or JSON). With --wait, prints the result and exits with the job's exit code.
    """
    cancel_on_interrupt = options.pop("cancel_on_interrupt")
    tags = options.pop("tags")
    requires = _requires(options.pop("gpus"), options.pop("requires"))
    options["env"] = env_pairs(options.pop("env"))
    options["after"] = [resolve(client, job_id) for job_id in options.pop("after")] or None
    for name in ("max_memory_bytes", "max_output_bytes"):
        options[name] = size(options[name])
    hint = shell_hint(list(args))
    if hint:
        err.print(hint, soft_wrap=True)
    options = {k: v for k, v in options.items() if v is not None}
    job = client.submit(list(args), tags=tags or None, requires=requires or None, **options)
    if not (wait_ or follow):
        if as_json:
            print_json(job.to_dict())
        else:
            err.print(f"submitted job {job.id}", render.state(job.status))
            click.echo(job.id)
        return
    with interruptible(client, job.id, cancel_on_interrupt):
        if follow:
            for chunk in client.logs(job.id, follow=True):
                sys.stderr.write(chunk)
                sys.stderr.flush()
            job = client.wait(job.id)
        else:
            job = wait_with_spinner(client, job)
    finish(client, job, as_json, show_stderr=not follow)


def _requires(gpus: int | None, specs: tuple[str, ...]) -> dict[str, int]:
    requires = {"gpus": gpus} if gpus else {}
    for spec in specs:
        name, _, units = spec.partition("=")
        if not name or not units.isdigit():
            raise click.BadParameter(f"{spec!r}: expected NAME=N, like license=1", param_hint="--require")
        requires[name.strip()] = int(units)
    return requires


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit status 124).")
@click.option("--json", "as_json", is_flag=True, help="Print the job object as JSON.")
@click.option("--cancel-on-interrupt", is_flag=True, help="Cancel the job on Ctrl+C without asking.")
@click.pass_obj
def wait(client: Client, job_id: str, timeout: float | None, as_json: bool, cancel_on_interrupt: bool) -> None:
    """Wait for a job, print its result, exit with its code."""
    job_id = resolve(client, job_id)
    with interruptible(client, job_id, cancel_on_interrupt):
        try:
            job = wait_with_spinner(client, client.status(job_id), timeout)
        except WaitTimeout as exc:
            err.print(f"[bold]procq:[/] {exc.description} after {timeout:g}s")
            sys.exit(EXIT_WAIT_TIMEOUT)
    finish(client, job, as_json, show_stderr=True)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job object as JSON.")
@click.pass_obj
def status(client: Client, job_id: str, as_json: bool) -> None:
    """Show a job's state, command, times, exit code.

    Also its tags, priority, resource use and error, where it has them.
    """
    job = client.status(resolve(client, job_id))
    if as_json:
        print_json(job.to_dict())
    elif out.is_terminal:
        out.print(render.job_panel(job))
    else:  # into a pipe: one `name: value` per line, nothing cut
        click.echo(render.job_plain(job))


@cli.command()
@click.argument("job_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to this file.")
@click.pass_obj
def result(client: Client, job_id: str, output: str | None) -> None:
    """Print a finished job's result (its stdout).

    The job must be COMPLETED. With -o, the result is written to a file instead.
    """
    job_id = resolve(client, job_id)
    if output:
        size = client.result_to(job_id, output)
        err.print(f"wrote {size} bytes to {output}")
    else:
        sys.stdout.buffer.write(client.result(job_id))
        sys.stdout.flush()


@cli.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the job writes, until it finishes.")
@click.option("--stdout", "stdout_", is_flag=True, help="Show stdout (the result so far) instead of stderr.")
@click.pass_obj
def logs(client: Client, job_id: str, follow: bool, stdout_: bool) -> None:
    """Print a job's stderr; -f follows it live."""
    job_id = resolve(client, job_id)
    try:
        for chunk in client.logs(job_id, follow=follow, stream="stdout" if stdout_ else "stderr"):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(render.EXIT_CANCELED)  # stop following; the job itself is untouched


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job object as JSON.")
@click.pass_obj
def cancel(client: Client, job_id: str, as_json: bool) -> None:
    """Cancel a queued or running job.

    Returns once the job's processes have ended.
    """
    job = client.cancel(resolve(client, job_id))
    if as_json:
        print_json(job.to_dict())
    else:
        err.print(f"job {job.id}", render.state(job.status))


@cli.command(name="ls")
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    type=click.Choice(STATES, case_sensitive=False),
    help="Only jobs in this state (repeatable).",
)
@click.option("--tag", "-t", help="Only jobs with this tag.")
@click.option("--search", "-q", help="Only jobs whose id starts with, or command contains, this (or tagged so).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="Show at most N jobs.")
@click.option("--all", "-a", "all_", is_flag=True, help="Show every job (all pages).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of job objects.")
@click.pass_obj
def list_jobs(
    client: Client,
    statuses: tuple[str, ...],
    tag: str | None,
    search: str | None,
    limit: int,
    all_: bool,
    as_json: bool,
) -> None:
    """List jobs, newest first: a table on a terminal, tab-separated lines (full ids) into a pipe."""
    status = [s.upper() for s in statuses]
    jobs = list(client.list(status, tag, min(limit, 500), None if all_ else limit, search))
    if as_json:
        print_json([job.to_dict() for job in jobs])
    elif not out.is_terminal:
        click.echo(render.jobs_plain(jobs))
    elif not jobs:
        err.print("no jobs")
    else:
        out.print(render.jobs_table(jobs))


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of what was deleted.")
@click.pass_obj
def rm(client: Client, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete finished jobs and their files."""
    deleted = []
    for job_id in (resolve(client, text) for text in job_ids):
        client.delete(job_id)
        deleted.append({"id": job_id, "deleted": True})
        if not as_json:
            err.print(f"deleted job {job_id}")
    if as_json:
        print_json(deleted)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON.")
@click.pass_obj
def rerun(client: Client, job_id: str, as_json: bool) -> None:
    """Run a finished job's command again, as a new job; prints the new id."""
    job = client.rerun(resolve(client, job_id))
    if as_json:
        print_json(job.to_dict())
    else:
        err.print(f"submitted job {job.id} (a rerun of {job.rerun_of})", render.state(job.status))
        click.echo(job.id)


# -- keys ----------------------------------------------------------------------------------------------


cli.add_command(keys)
cli.add_command(batch)
cli.add_command(queues)
cli.add_command(stats)
