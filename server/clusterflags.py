"""Cluster mode's flags: several nodes on one PostgreSQL. Without --database-url the server is the
single-machine server (SQLite in the jobs directory) and none of these matter."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_CAP = 8 << 20


def add_flags(add: Callable[..., Any], env: Callable[[str, str], str]) -> None:
    add(
        "--database-url",
        default=env("PROCQ_DATABASE_URL", "") or None,
        help="cluster mode: keep jobs in this PostgreSQL database (postgresql://...), shared by every node; "
        "prefer --database-url-file when the URL holds a password [PROCQ_DATABASE_URL]",
    )
    add(
        "--database-url-file",
        type=Path,
        default=env("PROCQ_DATABASE_URL_FILE", "") or None,
        help="read the database URL from this file (its first line) [PROCQ_DATABASE_URL_FILE]",
    )
    add(
        "--node-name",
        default=env("PROCQ_NODE_NAME", "") or None,
        help="cluster mode: this node's name, unique in the cluster (default: the host name) [PROCQ_NODE_NAME]",
    )
    add(
        "--cluster-output-cap",
        type=int,
        default=env("PROCQ_CLUSTER_OUTPUT_CAP", str(DEFAULT_OUTPUT_CAP)),
        help="cluster mode: bytes of a finished job's output kept in the database [PROCQ_CLUSTER_OUTPUT_CAP]",
    )
    add(
        "--lease",
        type=float,
        default=env("PROCQ_LEASE", "6"),
        help="cluster mode: seconds a node's lease lasts; a node silent that long has its jobs run "
        "elsewhere, and its keeper ends them min(2, lease / 3) s before (SIGKILL at most half that after "
        "SIGTERM, whatever --grace says): a restart with --on-stop keep must come sooner [PROCQ_LEASE]",
    )


def check(parser: argparse.ArgumentParser, args: argparse.Namespace, read_secret: Callable[..., str]) -> None:
    if args.database_url_file is not None:
        if args.database_url is not None:
            parser.error("--database-url-file and --database-url (or PROCQ_DATABASE_URL): give one")
        args.database_url = read_secret(parser, args.database_url_file)
    if args.database_url is not None and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be a PostgreSQL URL: postgresql://user@host:port/database")
    if args.database_url is None and args.node_name is not None:
        parser.error("--node-name needs --database-url (a single machine is not a cluster)")
    args.node_name = args.node_name or socket.gethostname()
    if args.cluster_output_cap < 0:
        parser.error("--cluster-output-cap must be 0 or more")
    if not 2.0 <= args.lease <= 60.0:
        parser.error("--lease must be between 2 and 60 seconds")
