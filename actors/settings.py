"""The server-wide settings the actors need, decided once at start by procq.server.main."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from procq.actors import backoff
from procq.actors.osdeps import RunAs
from procq.actors.resources.node import Node


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard we try: `max_attempts` deliveries, waiting base * 2**(n-1) seconds (at most cap) after
    failure n. The defaults retry for about four minutes before giving up."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 10.0

    def delay_after(self, failures: int) -> float:
        return backoff.exponential(self.backoff_base_s, failures, self.backoff_cap_s)


@dataclass(frozen=True)
class Settings:
    jobs_dir: Path
    workers: int = 2
    grace_s: float = 3.0  # between terminate and kill when a job's tree is ended
    restart_limit: int = 3  # starts allowed to a job whose runs keep being cut short by shutdowns/crashes
    webhook: WebhookPolicy = field(default_factory=WebhookPolicy)
    webhook_concurrency: int = 4  # deliveries in flight at once, so a dead receiver cannot pile up threads
    # ordering and limits (README "Deciding what runs")
    queues: tuple[tuple[str, int], ...] = ()  # (name, parallelism) from --queue; other queues get `workers`
    aging_s: float = 60.0  # a queued job's priority grows by 1 per aging_s seconds waited
    default_timeout_s: float | None = None
    default_max_output_bytes: int | None = None
    sample_interval_s: float = 0.5  # how often a running job's tree and output sizes are measured
    cwd_root: Path | None = None  # jobs may ask for a `cwd` inside it; without it they cannot
    retention_s: float = 7 * 86400  # finished jobs older than this are removed; 0 keeps them forever
    max_queued: int | None = None  # POST /jobs answers 429 while this many jobs wait (None: no limit)
    node: Node = field(default_factory=Node)  # the GPUs and counted resources jobs may require (none by default)
    run_as: RunAs | None = None  # --run-as: the user every job runs as (None: the server's own)
