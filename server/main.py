"""Start procq: settings from flags and PROCQ_* variables, recover jobs, serve on waitress, stop cleanly."""

from __future__ import annotations

import functools
import logging
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from procq.actors import osdeps, webhook
from procq.actors.dispatch.dispatcher import Dispatcher, DispatcherProxy
from procq.actors.dispatch.recovery import recover, sweep_deleted, sweep_leftovers
from procq.actors.errors import KeyFileError, StorageError
from procq.actors.events import EventHub
from procq.actors.job import timestamp, utc_now
from procq.actors.keeper.client import KeeperError
from procq.actors.keeper.link import KeeperLink
from procq.actors.lifecycle import LifecycleLog
from procq.actors.metrics import Metrics
from procq.actors.resources.detect import declared_node
from procq.actors.settings import Settings, WebhookPolicy
from procq.actors.store.sqlite import SqliteStore
from procq.api.app import create_app
from procq.api.commands import CommandPolicy
from procq.api.keys import KeyStore, keys_path
from procq.api.relay import ThisNode
from procq.server import keys as keys_command
from procq.server import logformat
from procq.server.flags import is_loopback, parse_args
from procq.server.httpserver import bind_error, create_server, starting_app

log = logging.getLogger("procq")
SECRET_VARIABLES = ("PROCQ_WEBHOOK_SECRET", "PROCQ_DATABASE_URL")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return keys_command.command_line(argv[1:])
    # Secrets leave the environment first: no job inherits them, and none can read them in
    # /proc/<server pid>/environ (osdeps re-executes this process without them).
    secrets = osdeps.take_secrets(SECRET_VARIABLES)
    args = parse_args(argv, secrets)
    logformat.configure(args.log_level, args.log_format)
    try:
        run_as = osdeps.lookup_run_as(args.run_as) if args.run_as else None
    except ValueError as exc:
        print(f"procq: {exc}", file=sys.stderr)
        return 2
    jobs_dir = args.jobs_dir.resolve()
    jobs_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = osdeps.lock_exclusively(jobs_dir / ".lock")
    except OSError:
        print(f"procq: another procq server is using {jobs_dir}; stop it or choose another --jobs-dir", file=sys.stderr)
        return 2
    try:
        keys = KeyStore(keys_path(jobs_dir, args.keys_file))
    except KeyFileError as exc:
        print(f"procq: {exc}; fix or remove it", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not keys.required:
        if not args.insecure_no_auth:
            print(
                f"procq: refusing to listen on {args.host!r} with no API key: anyone who can reach it could run "
                f"any command. Create a key first:\n  python run.py keys --jobs-dir {jobs_dir} create admin "
                "--scope admin\nor pass --insecure-no-auth to serve without keys anyway.",
                file=sys.stderr,
            )
            return 2
        log.warning("INSECURE: serving on %s with no API key; anyone who reaches it can run any command", args.host)
    commands = CommandPolicy(args.allow_command, allowed_env=args.allow_env)
    for entry in commands.unresolved:
        log.warning("--allow-command %r is not an executable on PATH or an absolute path: it matches nothing", entry)
    settings = Settings(
        jobs_dir=jobs_dir,
        workers=args.workers,
        grace_s=args.grace,
        restart_limit=args.restart_limit,
        webhook=WebhookPolicy(
            args.webhook_attempts, args.webhook_backoff, args.webhook_backoff_cap, args.webhook_timeout
        ),
        webhook_concurrency=args.webhook_concurrency,
        queues=args.queues,
        aging_s=args.aging_seconds,
        default_timeout_s=args.timeout,
        default_max_output_bytes=args.max_output_bytes,
        sample_interval_s=args.sample_interval,
        cwd_root=args.cwd_root.resolve() if args.cwd_root else None,
        retention_s=args.retention,
        max_queued=args.max_queued,
        node=declared_node(args.gpus, args.resources),
        run_as=run_as,
    )
    if run_as is not None:
        log.info("jobs run as user %s (uid %d, gid %d)", run_as.name, run_as.uid, run_as.gid)
    if settings.node.totals():
        log.info("jobs may require: %s", settings.node.describe())
    try:  # bind first: with the port taken, procq must stop before it recovers or starts any job
        server = create_server(
            starting_app,
            host=args.host,
            port=args.port,
            threads=args.threads,
            max_request_body_size=args.max_body_bytes * 2,  # the app answers 413 itself, in JSON
            channel_request_lookahead=1,  # lets an event stream see its client hang up (api/sse.py)
            connection_limit=max(100, args.threads * 2),  # waitress's default of 100 would refuse followers
            ident="procq",
        )
    except OSError as exc:
        lock.close()
        print(f"procq: {bind_error(args.host, args.port, exc)}", file=sys.stderr)
        return 1
    try:
        keeper = KeeperLink(jobs_dir, settings.grace_s, fenced=args.database_url is not None)
    except KeeperError as exc:
        print(f"procq: could not start or reach the keeper of {jobs_dir}: {exc}", file=sys.stderr)
        server.close()
        lock.close()
        return 2
    url = f"http://{args.host}:{server.effective_port}"
    cluster = None
    try:
        if args.database_url is not None:  # cluster mode: only then is psycopg imported
            from procq.server import cluster as joining

            store, cluster = joining.join(args, settings, jobs_dir, url, keeper)
        else:
            store = SqliteStore(jobs_dir)
        recovered = recover(settings, store, timestamp(utc_now()), keeper)
    except (StorageError, sqlite3.Error, RuntimeError) as exc:
        where = f"node {args.node_name} of the cluster" if args.database_url else jobs_dir
        print(f"procq: cannot open the store for {where}: {exc}", file=sys.stderr)
        if cluster is not None:
            cluster.close()
        keeper.close(keep_running=True)
        server.close()
        lock.close()
        return 2
    jobs = recovered.jobs
    threading.Thread(target=_sweep, args=(jobs_dir, store), daemon=True, name="sweep-tmp").start()
    events, metrics = EventHub(local=cluster is None), Metrics()
    if cluster is not None:  # every node's job changes, this node's included, come from the database
        cluster.feed_events(events.publish)
    send = functools.partial(webhook.send, secret=args.webhook_secret, deny_private=args.webhook_deny_private)
    watchers = (events, metrics, LifecycleLog())
    kind, extra = (Dispatcher, {}) if cluster is None else (joining.ClusterDispatcher, {"cluster": cluster})
    dispatcher = kind.start(
        settings,
        jobs,
        send_webhook=send,
        watchers=watchers,
        keeper=keeper,
        store=store,
        counts=recovered.counts,
        **extra,
    ).proxy()
    answers: Any = dispatcher
    if cluster is not None:  # questions only the database answers are read on the API's threads
        from procq.api.database import DatabaseAnswers

        answers = DatabaseAnswers(dispatcher, store)
    app = create_app(
        answers,
        jobs_dir,
        args.max_body_bytes,
        cancel_wait_s=args.grace + 30,
        cwd_root=settings.cwd_root,
        events=events,
        metrics=metrics,
        max_streams=args.max_streams,
        keys=keys,
        commands=commands,
        loopback_only=is_loopback(args.host),
        node=None if cluster is None else ThisNode(cluster.name, cluster.secret, store.kept_output),
    )
    server.application = app  # read per request by waitress's tasks
    keep_running = args.on_stop == "keep"
    osdeps.install_shutdown(lambda: _stopping(events, keep_running))
    try:
        total = sum(recovered.counts.values())
        message = f"serving on {url} with {total} jobs from {jobs_dir}"
        if cluster is not None:
            message += f" as node {cluster.name} of the cluster"
        fields = {"url": url, "jobs": total, "jobs_dir": str(jobs_dir)}
        print(logformat.line(args.log_format, message, **fields) if args.log_format == "json" else f"procq {message}")
        sys.stdout.flush()
        server.run()  # returns when a signal raises KeyboardInterrupt; waitress then stops its threads
    except KeyboardInterrupt:
        pass  # the signal came before waitress's loop started (clients may connect once we print)
    finally:
        server.close()
        _stop(dispatcher, args.grace + 10, keep_running)
        if cluster is not None:  # its lease ends now (the sweep need not wait), or is left to the keeper
            cluster.close(keep_running)
        store.close()  # after every actor: the last ends they recorded are committed
        keeper.close(keep_running)
        lock.close()
    log.info("stopped")
    return 0


def _sweep(jobs_dir: Path, store: SqliteStore) -> None:
    """Background, after start: what crashes left in the jobs directory (it lists every job directory)."""
    sweep_leftovers(jobs_dir)
    try:
        sweep_deleted(jobs_dir, store)
    except Exception:  # a sweep that fails is tried again at the next start
        log.exception("sweeping the job directories failed")


def _stopping(events: EventHub, keep_running: bool) -> None:
    if keep_running:
        log.info("stopping: no new jobs; running ones are left to the keeper for the next server")
    else:
        log.info("stopping: no new jobs; ending running ones")
    # Open event streams end now: waitress waits for its threads before server.run() returns.
    events.close()


def _stop(dispatcher: DispatcherProxy, wait_s: float, keep_running: bool) -> None:
    """Interrupt running jobs (their trees end; they are queued again for the next start), or leave
    them to the keeper, then stop every actor. Waits in short slices: a bare Event.wait ignores
    Ctrl+C on Windows."""
    finished = dispatcher.shutdown(keep_running).get(timeout=10)
    deadline = time.monotonic() + wait_s
    for event in finished:
        while not event.wait(0.5) and time.monotonic() < deadline:
            pass
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
