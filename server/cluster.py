"""Joining a cluster at start (--database-url): the PostgreSQL store and this node's place in the
cluster. Imported only in cluster mode, so a single machine never needs psycopg."""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg

from procq.actors.cluster import queues as cluster_queues
from procq.actors.cluster.node import ClusterNode
from procq.actors.dispatch.clustered import ClusterDispatcher
from procq.actors.errors import StorageError
from procq.actors.keeper.link import KeeperLink
from procq.actors.settings import Settings
from procq.actors.store.postgres import PostgresStore

__all__ = ["ClusterDispatcher", "join"]


def join(
    args: argparse.Namespace, settings: Settings, jobs_dir: Path, address: str, keeper: KeeperLink
) -> tuple[PostgresStore, ClusterNode]:
    """Open the shared store (migrating it under an advisory lock) and register this node, before
    recovery: its runs stay its own while it recovers them, and the keeper is told until when (it
    ends them itself should no renewal follow). Raises StorageError."""
    store = PostgresStore(
        args.database_url, jobs_dir, node=args.node_name, claims=True, output_cap=args.cluster_output_cap
    )
    node = ClusterNode(
        store,
        args.node_name,
        address,
        settings.workers,
        settings.node.totals(),
        lease_s=args.lease,
        keeper=keeper,
        grace_s=settings.grace_s,
    )
    try:
        node.join()
        with store.connection() as conn:  # --queue at a node's start: for every node (the last started wins)
            for name, parallelism in settings.queues:
                cluster_queues.configure(conn, name, parallelism)
    except psycopg.Error as exc:
        store.close()
        raise StorageError("join the cluster", exc) from exc
    return store, node
