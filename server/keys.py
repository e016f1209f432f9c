"""`run.py keys create|list|revoke` (and `procq keys`): manage API keys in the server's keys file, whether the
server runs or not. The KeyStore itself is api/keys.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from procq.actors.errors import ConfigError, KeyFileError, KeyNotFound
from procq.api.keys import SCOPES, KeyStore, keys_path, lockout_risk
from procq.server.config import ConfigSource


def command_line(argv: list[str]) -> int:
    """Run one keys command; returns the exit code (2 with a message on stderr when it cannot)."""
    try:
        source = ConfigSource(argv)  # the server's own settings, so both find the same keys file
    except ConfigError as exc:
        print(f"procq keys: {exc}", file=sys.stderr)
        return 2
    args = _parser(source).parse_args(argv)
    try:
        store = KeyStore(keys_path(args.jobs_dir, args.keys_file))
        if args.command == "create":
            name, scopes = _name_and_scopes(args)
            risk = lockout_risk(store, scopes)
            if risk and not args.yes:
                print(f"procq keys: refused: {risk} (or pass --yes)", file=sys.stderr)
                return 2
            key, clear = store.create(name, scopes)
            print(f"created key {key.id} ({key.name}) with scopes {','.join(key.scopes)} in {store.path}")
            print("the key, shown this once; store it now:")
            print(clear)
        elif args.command == "list":
            for key in store.list():
                state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
                print(f"{key.id}  {key.name:<20} {','.join(key.scopes):<40} created {key.created_at}  {state}")
        else:
            key = store.revoke(args.id)
            print(f"revoked key {key.id} ({key.name})")
    except (ValueError, KeyNotFound, KeyFileError, OSError) as exc:
        print(f"procq keys: {exc}", file=sys.stderr)
        return 2
    return 0


def _parser(source: ConfigSource) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py keys",
        description="Manage procq's API keys. Give the same --jobs-dir / --keys-file / --config as the server.",
    )
    _add_globals(parser)
    parser.set_defaults(
        config=source.path,
        jobs_dir=Path(source("PROCQ_JOBS_DIR", "jobs")),
        keys_file=Path(keys_file) if (keys_file := source("PROCQ_KEYS_FILE", "")) else None,
    )
    # The same options on every subcommand, so they may also follow it (`keys create --jobs-dir D`).
    # SUPPRESS there: an option not given after the subcommand keeps the value given before it.
    after = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _add_globals(after)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", parents=[after], help="make a key and print it (shown once)")
    # The same words as `procq keys create NAME --scope S...`; --name and --scopes a,b still work.
    create.add_argument("name", nargs="?", help="who or what uses it, e.g. ci")
    create.add_argument(
        "--scope", dest="scope", action="append", default=[], help=f"what it may do, repeatable: {', '.join(SCOPES)}"
    )
    create.add_argument("--name", dest="name_option", help=argparse.SUPPRESS)
    create.add_argument("--scopes", help=argparse.SUPPRESS)
    create.add_argument("--yes", action="store_true", help="create a first key without admin anyway")
    commands.add_parser("list", parents=[after], help="show every key (never the keys themselves)")
    revoke = commands.add_parser("revoke", parents=[after], help="revoke a key; the running server refuses it at once")
    revoke.add_argument("id")
    return parser


def _name_and_scopes(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """NAME and the scopes, from `create NAME --scope S...` or the older `create --name N --scopes a,b`."""
    name = args.name or args.name_option
    if not name:
        raise ValueError("create needs a name: run.py keys create NAME --scope SCOPE")
    given = [*args.scope, *([args.scopes] if args.scopes else [])]
    scopes = tuple(s.strip() for value in given for s in value.split(",") if s.strip())
    if not scopes:
        raise ValueError(f"create needs at least one --scope, of: {', '.join(SCOPES)}")
    return name, scopes


def _add_globals(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the server's TOML file [PROCQ_CONFIG]")
    parser.add_argument(
        "--jobs-dir",
        type=Path,
        help="the server's data directory; the keys file is <jobs-dir>/.keys.json [PROCQ_JOBS_DIR]",
    )
    parser.add_argument("--keys-file", type=Path, help="keys file [PROCQ_KEYS_FILE]")
