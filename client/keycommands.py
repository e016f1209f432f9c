"""`procq keys`: API keys over /admin/keys (the key used needs the admin scope)."""

from __future__ import annotations

import click

from procq.client import render
from procq.client.client import Client
from procq.client.terminal import err, out, print_json


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (admin scope)."""


@keys.command(name="create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    default=("jobs:submit", "jobs:read", "jobs:cancel"),
    show_default=True,
    type=click.Choice(["jobs:submit", "jobs:read", "jobs:cancel", "admin"]),
    help="What the key may do (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
@click.pass_obj
def keys_create(client: Client, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a key; its secret is printed only now."""
    key = client.create_key(name, scopes)
    if as_json:
        print_json(key.raw)
        return
    err.print(f"created key {key.id} ({name}: {' '.join(key.scopes)}); the secret is shown only now:")
    click.echo(key.key)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def keys_list(client: Client, as_json: bool) -> None:
    """List keys (never their secrets)."""
    found = client.list_keys()
    if as_json:
        print_json([key.raw for key in found])
    else:
        out.print(render.keys_table(found))


@keys.command(name="revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(client: Client, key_id: str) -> None:
    """Revoke a key: requests using it are refused from now on."""
    client.revoke_key(key_id)
    err.print(f"revoked key {key_id}")
