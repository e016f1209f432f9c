"""`procq queues` and `procq stats`: the server's queues (and pausing them) and its counts."""

from __future__ import annotations

import click
from rich.table import Table

from procq.client.client import Client
from procq.client.terminal import out, print_json


@click.command()
@click.option("--pause", metavar="QUEUE", help="Pause a queue: running jobs go on, nothing new starts.")
@click.option("--resume", metavar="QUEUE", help="Resume a paused queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the queues as JSON.")
@click.pass_obj
def queues(client: Client, pause: str | None, resume: str | None, as_json: bool) -> None:
    """Show each queue's parallelism, pause state and counts; pause or resume one."""
    for name, paused in ((pause, True), (resume, False)):
        if name:
            client.set_queue(name, paused=paused)
    found = client.queues()
    if as_json:
        print_json(found)
        return
    columns = ("QUEUE", "PARALLELISM", "PAUSED", "QUEUED", "RUNNING")
    rows = [
        (q["name"], str(q["parallelism"]), "yes" if q["paused"] else "no", str(q["queued"]), str(q["running"]))
        for q in found
    ]
    if not out.is_terminal:
        click.echo("\n".join("\t".join(row) for row in [columns, *rows]))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print GET /stats as JSON.")
@click.pass_obj
def stats(client: Client, as_json: bool) -> None:
    """Jobs per state (your own, with a key that is not admin), busy workers, and rates."""
    data = client.stats()
    if as_json:
        print_json(data)
        return
    for state, count in data.get("counts", {}).items():
        click.echo(f"{state}\t{count}")
    workers = data.get("workers", {})
    click.echo(f"workers busy\t{workers.get('busy')} of {workers.get('total')}")
    click.echo(f"submitted per minute\t{data.get('submitted_per_s', 0) * 60:.1f}")
    click.echo(f"finished per minute\t{data.get('completed_per_s', 0) * 60:.1f}")
