"""How a Supervisor follows its run through the server's one Monitor: timeout, limits, usage, progress."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from procq.actors.job import Job, Status, Usage
from procq.actors.resources import detect
from procq.actors.supervise import limits
from procq.actors.supervise.progress import Progress
from procq.actors.supervise.sampler import Sample
from procq.actors.transitions import StopReason

if TYPE_CHECKING:
    from procq.actors.jobdir import JobDir
    from procq.actors.mailbox import Mailbox
    from procq.actors.settings import Settings
    from procq.actors.supervise.monitor import Monitor
    from procq.actors.supervise.supervisor import Supervisor
    from procq.actors.webhook import SendWebhook
    from procq.actors.webhookpool import WebhookPool

log = logging.getLogger("procq.supervisor")


class Watching:
    """The part of the Supervisor the Monitor talks to (samples, limits, the timeout) and that hands
    it the run. A mixin: it works on the Supervisor's job and state, on the actor's thread."""

    if TYPE_CHECKING:
        _job: Job
        _run: str | None
        _dir: JobDir
        _settings: Settings
        _monitor: Monitor | None
        _self: Mailbox[Supervisor]
        _send: SendWebhook
        _pool: WebhookPool
        _usage: Usage
        _limit_error: str | None
        _stop_reason: StopReason | None

        def _end_tree(self, reason: StopReason) -> None: ...

    def sampled(self, sample: Sample) -> None:
        """From the Monitor: the tree's usage now. Ends the tree past a memory or output limit."""
        usage = Usage(sample.cpu_user_s, sample.cpu_system_s, sample.rss_bytes, sample.gpu_memory_bytes)
        self._usage = self._usage.merge(usage)
        error = limits.exceeded(self._job, sample)
        if error is not None:
            self.limit_reached(error)

    def limit_reached(self, error: str) -> None:
        """End the tree because a limit was passed; the job ends FAILED with `error` (or is retried)."""
        if self._job.status is Status.IN_PROGRESS and self._stop_reason is None:
            log.info("job %s: %s", self._job.id, error)
            self._limit_error = error
            self._end_tree(StopReason.LIMIT)

    def _watch(self, pid: int, created: float, timeout_in_s: float | None) -> None:
        """Hand the run to the server's Monitor: its timeout, its samples (limits), its progress webhooks."""
        job, run = self._job, self._run
        if self._monitor is None or run is None:
            return
        progress = None
        if job.webhook and {"start", "logs"} & set(job.webhook_events):
            timeout_s = self._settings.webhook.timeout_s
            progress = Progress(
                job.id, job.attempts, job.webhook, job.webhook_events, self._send, timeout_s, self._pool
            )
        node = self._settings.node
        gpu_memory = detect.gpu_memory_by_pid if node.manages_gpus and node.vendor == "nvidia" else None
        sample = job.max_memory_bytes is not None or job.max_output_bytes is not None or gpu_memory is not None
        outputs = (self._dir.stdout, self._dir.stderr)
        error = limits.timed_out(job) if job.timeout_seconds is not None else ""
        self._monitor.watch(run, self._self, pid, created, outputs, sample, progress, timeout_in_s, error, gpu_memory)
