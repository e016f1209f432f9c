"""The `procq` console script: the client's command line plus `procq serve`, which starts this server.

It lives here, not in procq.client, so that the client package never imports the server."""

from __future__ import annotations

import sys

import click

from procq.client import cli as client_cli


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def serve(flags: tuple[str, ...]) -> None:
    """Start the server (same flags as run.py).

    `procq serve FLAGS` is exactly `python run.py FLAGS`; try `procq serve --help`.
    """
    from procq.server.main import main as serve_main  # only this command needs the server's imports

    sys.exit(serve_main(list(flags)))


def main() -> None:
    """The console script's entry point."""
    client_cli.cli.add_command(serve)
    client_cli.main()


if __name__ == "__main__":
    main()
