"""How the CLI shows jobs: to people on a terminal (state colours with words, the job table, the job panel)
and to pipes (plain tab-separated lines, nothing cut, one record per line), and the exit codes."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from procq.client.job import ApiKey, Job

# Colour and a symbol for each state, always next to the state's name: colour alone says nothing to a
# colour-blind reader or in a log file.
STATE_STYLES = {
    "IN_QUEUE": ("cyan", "◷"),
    "IN_PROGRESS": ("bold yellow", "▶"),
    "COMPLETED": ("green", "✔"),
    "FAILED": ("bold red", "✘"),
    "CANCELED": ("magenta", "⊘"),
}

EXIT_CANCELED = 130  # what a shell reports for a command ended by Ctrl+C
EXIT_NOT_STARTED = 127  # what a shell reports for a command it could not run


def state(status: str) -> Text:
    """The state as coloured text with its symbol and its name, e.g. "✔ COMPLETED" in green."""
    style, symbol = STATE_STYLES.get(status, ("white", "?"))
    return Text(f"{symbol} {status}", style=style)


def exit_code(job: Job) -> int:
    """The exit status `procq submit --wait` ends with, so a script sees what the command would have
    returned: its own code, 128+N for a signal N, 127 if it never started, 130 if it was canceled."""
    if job.status == "COMPLETED":
        return 0
    if job.status == "CANCELED":
        return EXIT_CANCELED
    if job.exit_code is None:
        return EXIT_NOT_STARTED if job.status == "FAILED" else 1
    if job.exit_code < 0:
        return 128 + min(-job.exit_code, 127)
    return job.exit_code if job.exit_code <= 255 else 1  # Windows codes can exceed what a shell holds


def command(args: list[str]) -> str:
    """The args as one line a person can read (quoted where a space or quote would confuse)."""
    return " ".join(a if a and not any(c in a for c in " \t\"'\\") else repr(a) for a in args)


def age(text: str | None, now: datetime | None = None) -> str:
    """'12s ago', '3m ago', '5h ago', '2d ago' for a past timestamp, 'in 5s' for a future one; '' for None."""
    if not text:
        return ""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds <= -0.5:
        return f"in {_span(int(round(-seconds)))}"
    return f"{_span(max(0, int(seconds)))} ago"


def duration(job: Job, now: datetime | None = None) -> str:
    """How long the job ran (or has been running); '' before it started."""
    started = job.time("started_at")
    if started is None:
        return ""
    end = job.time("completed_at") or now or datetime.now(UTC)
    seconds = max(0.0, (end - started).total_seconds())
    return f"{seconds:.1f}s" if seconds < 60 else _span(int(seconds))


def jobs_table(jobs: list[Job]) -> Table:
    """The `procq ls` table: newest first, one row per job."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    gpus = any(job.requires for job in jobs)  # the column shows only where jobs ask for GPUs or units
    for name in ("ID", "STATE", "EXIT", "SUBMITTED", "RAN", *(("HOLDS",) if gpus else ()), "COMMAND", "TAGS"):
        table.add_column(name, no_wrap=name in ("ID", "STATE"), overflow="ellipsis")
    now = datetime.now(UTC)
    for job in jobs:
        table.add_row(
            job.id,
            state(job.status),
            "" if job.exit_code is None else str(job.exit_code),
            age(job.enqueued_at, now),
            duration(job, now),
            *((holds(job),) if gpus else ()),
            Text(command(job.args), overflow="ellipsis", no_wrap=True),
            ",".join(job.tags),
        )
    return table


JOB_COLUMNS = ("ID", "STATE", "EXIT", "SUBMITTED", "RAN", "COMMAND", "TAGS")


def jobs_plain(jobs: list[Job]) -> str:
    """`procq ls` into a pipe: a header, then one tab-separated line per job with nothing shortened (the
    full id, the exact submit time, the whole command), so `grep`, `cut -f1` and `awk -F'\t'` work."""
    gpus = any(job.requires for job in jobs)  # a last HOLDS column, so the others keep their places
    lines = ["\t".join((*JOB_COLUMNS, *(("HOLDS",) if gpus else ())))]
    for job in jobs:
        fields = (
            job.id,
            job.status,
            "" if job.exit_code is None else str(job.exit_code),
            job.enqueued_at or "",
            duration(job),
            command(job.args),
            ",".join(job.tags),
            *((holds(job),) if gpus else ()),
        )
        lines.append("\t".join(_one_line(field) for field in fields))
    return "\n".join(lines)


def job_plain(job: Job) -> str:
    """`procq status` into a pipe: `name: value` lines, values whole and on one line."""
    return "\n".join(f"{name}: {_one_line(str(value))}" for name, value in _job_rows(job))


def keys_plain(keys: list[ApiKey]) -> str:
    lines = ["ID\tNAME\tSCOPES\tCREATED"]
    lines += [f"{key.id}\t{key.name}\t{','.join(key.scopes)}\t{key.created_at or ''}" for key in keys]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def holds(job: Job) -> str:
    """What a job was given ("GPU 1,3 license=1"), or, while it waits, what it asks for ("wants gpus=2")."""
    if job.assigned:
        gpus = job.assigned.get("gpus") or []
        parts = [f"GPU {','.join(gpus)}"] if gpus else []
        parts += [f"{name}={units}" for name, units in job.assigned.items() if name != "gpus"]
        return " ".join(parts)
    if job.requires:
        return "wants " + " ".join(f"{name}={units}" for name, units in job.requires.items())
    return ""


def job_panel(job: Job) -> Table:
    """`procq status`: every field a person asks about, one per line; empty ones left out."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in _job_rows(job):
        table.add_row(name, state(job.status) if name == "state" else str(value))
    return table


def _job_rows(job: Job) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("id", job.id),
        ("state", job.status),
        ("waiting", waiting(job)),
        ("command", command(job.args)),
        ("exit code", job.exit_code),
        ("error", job.error),
        ("attempts", job.attempts),
        ("submitted", job.enqueued_at),
        ("started", job.started_at),
        ("completed", job.completed_at),
        ("ran for", duration(job)),
        ("runs at", job.run_at),
        ("priority", job.priority or None),
        ("queue", job.queue if job.queue != "default" else None),
        ("timeout", f"{job.timeout_seconds}s" if job.timeout_seconds else None),
        ("tags", ", ".join(job.tags)),
        ("result type", job.mime_type),
        ("webhook", job.webhook),
        ("requires", " ".join(f"{name}={units}" for name, units in job.requires.items())),
        ("assigned", holds(job) if job.assigned else None),
        ("resources", _resources(job)),
        ("owner", job.owner),
        ("rerun of", job.rerun_of),
        ("interrupted", job.raw.get("interrupted")),
    ]
    return [(name, value) for name, value in rows if value not in (None, "")]


def waiting(job: Job, now: datetime | None = None) -> str:
    """What a queued job waits for besides a free worker: 'scheduled in 5m', 'retry in 3s', 'after 2 jobs'."""
    if job.status != "IN_QUEUE":
        return ""
    run_at = job.time("run_at")
    if run_at is not None and run_at > (now or datetime.now(UTC)):
        left = int(round((run_at - (now or datetime.now(UTC))).total_seconds()))
        return f"{'retry' if job.raw.get('runs') else 'scheduled'} in {_span(left)}"
    after = job.raw.get("after") or []
    return f"after {len(after)} job{'s' if len(after) != 1 else ''}" if after else ""


def keys_table(keys: list[ApiKey]) -> Table:
    """`procq keys list`: id, name, scopes, created."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "NAME", "SCOPES", "CREATED"):
        table.add_column(name)
    for key in keys:
        table.add_row(key.id, key.name, " ".join(key.scopes), key.created_at or "")
    return table


def _resources(job: Job) -> str:
    usage = job.resources or {}
    parts = []
    if usage.get("cpu_user_seconds") is not None:
        cpu = usage["cpu_user_seconds"] + (usage.get("cpu_system_seconds") or 0)
        parts.append(f"cpu {cpu:.2f}s")
    if usage.get("peak_rss_bytes"):
        parts.append(f"peak memory {usage['peak_rss_bytes'] / (1 << 20):.1f} MiB")
    if usage.get("wall_seconds") is not None:
        parts.append(f"wall {usage['wall_seconds']:.2f}s")
    return ", ".join(parts)


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
