"""run.py's flags: every setting, its PROCQ_* variable (and TOML key), and the checks between them."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procq.actors.job import QUEUE_NAME_PATTERN
from procq.actors.resources import node
from procq.server import clusterflags
from procq.server.config import ConfigError, ConfigSource
from procq.server.flagparser import FlagParser, grouped
from procq.server.values import parse_duration, parse_secret


def parse_args(argv: list[str] | None = None, secrets: dict[str, str] | None = None) -> argparse.Namespace:
    """The settings. `secrets`: PROCQ_* secrets already taken out of the environment (osdeps.take_secrets)."""
    try:
        env = ConfigSource(argv, {**os.environ, **(secrets or {})})  # flags > PROCQ_* > TOML file > defaults
    except ConfigError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)  # one line, naming the file
        raise SystemExit(2) from exc
    parser = FlagParser(
        argv,
        env,
        prog="run.py",
        usage="run.py [OPTIONS]          serve (the options below)\n"
        "       run.py keys {create,list,revoke} ...   manage API keys (run.py keys --help)",
        description="procq: a job server that runs every job as its own process. "
        "Every flag can also be set with the PROCQ_* environment variable shown, or in a TOML file "
        '(--config) as `name = value` with the flag\'s name (e.g. jobs_dir = "/srv/jobs"). '
        "Precedence: flags, then PROCQ_* variables, then the TOML file, then the defaults shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = grouped(parser)
    add("--config", type=Path, default=env.path, help="TOML file of settings [PROCQ_CONFIG]")
    add("--host", default=env("PROCQ_HOST", "127.0.0.1"), help="address to listen on [PROCQ_HOST]")
    add(
        "--port", type=int, default=env("PROCQ_PORT", "8080"), help="port to listen on; 0 picks a free one [PROCQ_PORT]"
    )
    add(
        "--jobs-dir",
        type=Path,
        default=env("PROCQ_JOBS_DIR", "jobs"),
        help="data directory, one folder per job [PROCQ_JOBS_DIR]",
    )
    add(
        "--workers",
        type=int,
        default=env("PROCQ_WORKERS", str(os.cpu_count() or 1)),
        help="jobs running at once [PROCQ_WORKERS]",
    )
    add(
        "--threads",
        type=int,
        default=env("PROCQ_THREADS", "64"),
        help="HTTP worker threads; each open event stream (log follower, /events) holds one [PROCQ_THREADS]",
    )
    add(
        "--max-streams",
        type=int,
        default=env("PROCQ_MAX_STREAMS", "0"),
        help="open event streams allowed at once, the rest answered 503; 0 means 3/4 of --threads, "
        "leaving threads for other requests [PROCQ_MAX_STREAMS]",
    )
    add(
        "--retention",
        type=_duration,
        default=env("PROCQ_RETENTION", "7d"),
        help="finished jobs older than this are deleted in the background: seconds, or a number with "
        "s, m, h or d; 0 keeps them forever [PROCQ_RETENTION]",
    )
    add(
        "--max-body-bytes",
        type=int,
        default=env("PROCQ_MAX_BODY_BYTES", str(1 << 20)),
        help="largest request body accepted [PROCQ_MAX_BODY_BYTES]",
    )
    add(
        "--grace",
        type=float,
        default=env("PROCQ_GRACE", "3"),
        help="seconds between terminate and kill when a job's processes are ended [PROCQ_GRACE]",
    )
    add(
        "--restart-limit",
        type=int,
        default=env("PROCQ_RESTART_LIMIT", "3"),
        help="starts allowed to a job whose runs are cut short by shutdowns or crashes [PROCQ_RESTART_LIMIT]",
    )
    add(
        "--on-stop",
        choices=("stop", "keep"),
        default=env("PROCQ_ON_STOP", "stop"),
        help="what SIGINT/SIGTERM does to running jobs: stop ends their process trees and queues them "
        "again; keep leaves them running under the keeper for the next server to re-adopt (upgrades) "
        "[PROCQ_ON_STOP]",
    )
    add(
        "--webhook-attempts",
        type=int,
        default=env("PROCQ_WEBHOOK_ATTEMPTS", "8"),
        help="delivery attempts per webhook [PROCQ_WEBHOOK_ATTEMPTS]",
    )
    add(
        "--webhook-backoff",
        type=float,
        default=env("PROCQ_WEBHOOK_BACKOFF", "1"),
        help="seconds before the first retry; doubles each time [PROCQ_WEBHOOK_BACKOFF]",
    )
    add(
        "--webhook-backoff-cap",
        type=float,
        default=env("PROCQ_WEBHOOK_BACKOFF_CAP", "60"),
        help="longest wait between retries [PROCQ_WEBHOOK_BACKOFF_CAP]",
    )
    add(
        "--webhook-timeout",
        type=float,
        default=env("PROCQ_WEBHOOK_TIMEOUT", "10"),
        help="seconds one delivery may take [PROCQ_WEBHOOK_TIMEOUT]",
    )
    add(
        "--webhook-concurrency",
        type=int,
        default=env("PROCQ_WEBHOOK_CONCURRENCY", "4"),
        help="deliveries in flight at once [PROCQ_WEBHOOK_CONCURRENCY]",
    )
    _add_control_flags(add, env)
    _add_resource_flags(add, env)
    add(
        "--keys-file",
        type=Path,
        default=env("PROCQ_KEYS_FILE", "") or None,
        help="API keys file [PROCQ_KEYS_FILE]; "
        "default <jobs-dir>/.keys.json. Manage keys with: python run.py keys --help",
    )
    add(
        "--insecure-no-auth",
        action="store_true",
        default=_true(env("PROCQ_INSECURE_NO_AUTH", "false")),
        help="serve on a non-loopback --host with no API key: anyone who reaches it runs any command "
        "[PROCQ_INSECURE_NO_AUTH=1]",
    )
    add(
        "--allow-command",
        action="append",
        default=[c for c in env("PROCQ_ALLOW_COMMAND", "").split(os.pathsep) if c],
        help="only this executable may be run, by name (looked up on PATH) or absolute path; repeat "
        "for more. Recommended for exposed servers [PROCQ_ALLOW_COMMAND, separated by os.pathsep]",
    )
    add(
        "--allow-env",
        action="append",
        default=[c for c in env("PROCQ_ALLOW_ENV", "").split(",") if c],
        help="with --allow-command, a job may set only the environment variables named here (patterns "
        "with * allowed, e.g. RENDER_*); repeat for more [PROCQ_ALLOW_ENV, comma-separated]",
    )
    add(
        "--run-as",
        default=env("PROCQ_RUN_AS", "") or None,
        metavar="USER",
        help="POSIX, server started as root: every job runs as this user (name or uid), who owns the job's "
        "directory and output files; the jobs directory and meta.json stay the server's [PROCQ_RUN_AS]",
    )
    add(
        "--max-queued",
        type=int,
        default=env("PROCQ_MAX_QUEUED", "0"),
        help="POST /jobs answers 429 while this many jobs wait; 0 means no limit [PROCQ_MAX_QUEUED]",
    )
    add(
        "--webhook-secret",
        default=env("PROCQ_WEBHOOK_SECRET", "") or None,
        help="sign webhooks (Standard Webhooks, HMAC-SHA256); 'whsec_<base64>' or any text. Prefer "
        "--webhook-secret-file: flags show in process lists [PROCQ_WEBHOOK_SECRET]",
    )
    add(
        "--webhook-secret-file",
        type=Path,
        default=env("PROCQ_WEBHOOK_SECRET_FILE", "") or None,
        help="read the webhook signing secret from this file (its first line) [PROCQ_WEBHOOK_SECRET_FILE]",
    )
    add(
        "--webhook-deny-private",
        action="store_true",
        default=_true(env("PROCQ_WEBHOOK_DENY_PRIVATE", "false")),
        help="refuse webhooks to private, loopback and reserved addresses (link-local is always refused) "
        "[PROCQ_WEBHOOK_DENY_PRIVATE=1]",
    )
    add(
        "--log-level",
        default=env("PROCQ_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least important log lines shown: DEBUG adds each job's internal steps, WARNING keeps "
        "only problems [PROCQ_LOG_LEVEL]",
    )
    add(
        "--log-format",
        default=env("PROCQ_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="log lines as text, or as one JSON object per line with job_id, status and event fields "
        "on job lifecycle lines [PROCQ_LOG_FORMAT]",
    )
    clusterflags.add_flags(add, env)
    args = parser.parse_args(argv)
    if env.unknown_keys(parser):
        parser.error(f"unknown settings in {env.path}: {', '.join(env.unknown_keys(parser))}")
    if args.max_streams and not 0 < args.max_streams < args.threads:
        parser.error("--max-streams must be at least 1 and less than --threads, so other requests still get a thread")
    args.max_streams = args.max_streams or max(1, args.threads * 3 // 4)
    for name in ("workers", "threads", "max_body_bytes", "restart_limit", "webhook_attempts", "webhook_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_queued < 0:
        parser.error("--max-queued must be 0 (no limit) or more")
    args.max_queued = args.max_queued or None
    if args.webhook_secret_file is not None:
        if args.webhook_secret is not None:
            parser.error("--webhook-secret-file and --webhook-secret (or PROCQ_WEBHOOK_SECRET): give one")
        args.webhook_secret = read_secret_file(parser, args.webhook_secret_file)
    if args.webhook_secret is not None:
        try:
            args.webhook_secret = parse_secret(args.webhook_secret)
        except ValueError:
            parser.error("--webhook-secret: a secret starting with whsec_ must continue in base64")
    _check_control_flags(parser, args)
    clusterflags.check(parser, args, read_secret_file)
    try:
        args.gpus = node.parse_gpus(args.gpus)  # None: "auto", detected when the server starts
        args.resources = node.parse_counted(args.resources)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def read_secret_file(parser: argparse.ArgumentParser, path: Path) -> str:
    """A secret kept in a file (mode 0600, owned by the server's user): its first line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"cannot read the secret file {path}: {exc}")
    if not lines or not lines[0].strip():
        parser.error(f"the secret file {path} is empty")
    return lines[0].strip()


def _true(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" / 0.0.0.0: it may be reachable from elsewhere


def _add_control_flags(add: Callable[..., Any], env: ConfigSource) -> None:
    """Flags that decide what runs: queues, aging, default limits, sampling, the cwd root."""
    add(
        "--queue",
        dest="queues",  # named like PROCQ_QUEUES, so a config file's `queues = "gpu=1,cpu=4"` is known
        action="append",
        default=[q for q in env("PROCQ_QUEUES", "").split(",") if q],
        metavar="NAME=N",
        help="a named queue running at most N jobs at once; repeat for more [PROCQ_QUEUES, comma-separated]",
    )
    add(
        "--aging-seconds",
        type=float,
        default=env("PROCQ_AGING_SECONDS", "60"),
        help="a queued job's priority grows by 1 per this many seconds waited [PROCQ_AGING_SECONDS]",
    )
    add(
        "--timeout",
        type=float,
        default=env("PROCQ_TIMEOUT", "") or None,
        help="default timeout_seconds of a job; none if unset [PROCQ_TIMEOUT]",
    )
    add(
        "--max-output-bytes",
        type=int,
        default=env("PROCQ_MAX_OUTPUT_BYTES", "") or None,
        help="default max_output_bytes (stdout + stderr) of a job; none if unset [PROCQ_MAX_OUTPUT_BYTES]",
    )
    add(
        "--sample-interval",
        type=float,
        default=env("PROCQ_SAMPLE_INTERVAL", "0.5"),
        help="seconds between measurements of a running job's memory and output [PROCQ_SAMPLE_INTERVAL]",
    )
    add(
        "--cwd-root",
        type=Path,
        default=env("PROCQ_CWD_ROOT", "") or None,
        help="jobs may ask for a cwd inside this directory; without it they run in their own [PROCQ_CWD_ROOT]",
    )


def _add_resource_flags(add: Callable[..., Any], env: ConfigSource) -> None:
    add(
        "--gpus",
        default=env("PROCQ_GPUS", "none"),
        metavar="auto|none|IDS",
        help="GPUs jobs may require: auto (what NVIDIA's library, nvidia-smi or rocm-smi reports), none, "
        "or device ids like 0,1,3 (amd:0,1 for AMD). Each job sees only the ones it was given [PROCQ_GPUS]",
    )
    add(
        "--resource",
        dest="resources",  # named like PROCQ_RESOURCES, so a config file's `resources = "license=2"` is known
        action="append",
        default=[r for r in env("PROCQ_RESOURCES", "").split(",") if r],
        metavar="NAME=COUNT",
        help="a counted resource jobs may require (a licence, a scratch disk, GiB of memory); repeat for more "
        "[PROCQ_RESOURCES, comma-separated]",
    )


def _check_control_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    queues = []
    for spec in (part for value in args.queues for part in value.split(",") if part):
        name, _, count = spec.partition("=")
        if not re.fullmatch(QUEUE_NAME_PATTERN, name) or not count.isdigit() or int(count) < 1:
            parser.error(f"--queue {spec!r}: expected NAME=N, NAME of 1-32 of a-z 0-9 _ -, N at least 1")
        queues.append((name, int(count)))
    args.queues = tuple(queues)
    if args.aging_seconds <= 0 or args.sample_interval <= 0:
        parser.error("--aging-seconds and --sample-interval must be positive")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.max_output_bytes is not None and args.max_output_bytes < 1:
        parser.error("--max-output-bytes must be at least 1")
    if args.cwd_root is not None and not args.cwd_root.is_dir():
        parser.error(f"--cwd-root {str(args.cwd_root)!r} is not a directory")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
