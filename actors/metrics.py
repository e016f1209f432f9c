"""Counters and histograms of job lifecycles (Prometheus) and the one-minute rates of GET /stats."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from procq.actors.job import DeliveryState, Job, Status, parse_timestamp

RATE_WINDOW_S = 60.0
HISTORY_STEP_S = 10  # GET /stats history: one count per 10 s ...
HISTORY_STEPS = 60  # ... for the last 10 minutes, so a dashboard opened now draws a chart at once
# Seconds; jobs range from sub-second scripts to hour-long builds.
_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, float("inf"))


class Metrics:
    """A Watcher of the Dispatcher: counts what happens to jobs. Thread-safe (prometheus_client
    metrics are; the rate windows have a lock), and cheap enough to run on the actor thread.

    Gauges of the current state (jobs by status, busy slots) are not tracked here: they are set
    from the Dispatcher's answer when /metrics is scraped, so they can never drift.
    Each instance has its own registry, so several servers (or tests) in one process do not clash.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._submitted: deque[float] = deque()
        self._completed: deque[float] = deque()
        # Per step (int(now / HISTORY_STEP_S)): [submitted, finished]. Only the last HISTORY_STEPS are kept.
        self._steps: dict[int, list[int]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter("procq_jobs_submitted", "Jobs accepted by POST /jobs.", registry=r)
        self.finished = Counter(
            "procq_jobs_finished", "Jobs that reached a terminal state, by outcome.", ["outcome"], registry=r
        )
        self.queue_wait = Histogram(
            "procq_job_queue_wait_seconds", "From enqueued_at to started_at of each run.", buckets=_BUCKETS, registry=r
        )
        self.run_time = Histogram(
            "procq_job_run_seconds", "From started_at to completed_at of finished runs.", buckets=_BUCKETS, registry=r
        )
        self.webhook_attempts = Counter(
            "procq_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed).",
            ["outcome"],
            registry=r,
        )
        self.webhook_given_up = Counter(
            "procq_webhook_given_up", "Webhooks abandoned after their last failed attempt.", registry=r
        )
        self.jobs = Gauge("procq_jobs", "Jobs in the index, by status.", ["status"], registry=r)
        self.workers_busy = Gauge("procq_workers_busy", "Worker slots running a job.", registry=r)
        self.workers_total = Gauge("procq_workers_total", "Worker slots (--workers).", registry=r)
        self.resource_units = Gauge(
            "procq_resource_units",
            "Units of GPUs and counted resources (--gpus, --resource) in use and free.",
            ["resource", "state"],
            registry=r,
        )
        self.gpu_busy = Gauge("procq_gpu_busy", "1 while a job holds the GPU, else 0.", ["gpu"], registry=r)
        for status in Status:  # every series exists from the start, at 0
            self.jobs.labels(status.value)
            if status.terminal:
                self.finished.labels(status.value)
        for outcome in (DeliveryState.DELIVERED.value, DeliveryState.FAILED.value):
            self.webhook_attempts.labels(outcome)

    # --- Watcher -----------------------------------------------------------------------------------

    def job_changed(self, before: Job | None, after: Job) -> None:
        now = self._clock()
        if before is None:
            self.submitted.inc()
            self._tick(self._submitted, now)
        elif before.status is not after.status:
            if after.status is Status.IN_PROGRESS:
                self._observe(self.queue_wait, after.enqueued_at, after.started_at)
            if after.status.terminal:
                self.finished.labels(after.status.value).inc()
                self._observe(self.run_time, after.started_at, after.completed_at)
                self._tick(self._completed, now)
        self._count_delivery(before, after)

    def job_removed(self, job: Job) -> None:
        pass

    # --- GET /stats ----------------------------------------------------------------------------------

    def rates(self) -> tuple[float, float]:
        """(submitted per second, completed per second) over the last minute, or since the start
        when the server is younger than that."""
        now = self._clock()
        window = max(1.0, min(RATE_WINDOW_S, now - self._started))
        with self._lock:
            counts = [self._trim(times, now) for times in (self._submitted, self._completed)]
        return counts[0] / window, counts[1] / window

    def set_state(self, counts: dict[str, int], busy: int, total: int) -> None:
        for status, count in counts.items():
            self.jobs.labels(status).set(count)
        self.workers_busy.set(busy)
        self.workers_total.set(total)

    def set_resources(self, view: dict[str, Any]) -> None:
        """From the Scheduler's view (GET /resources) at each scrape."""
        if view["gpus"]:
            busy = sum(1 for gpu in view["gpus"] if gpu["busy"])
            self.resource_units.labels("gpus", "in_use").set(busy)
            self.resource_units.labels("gpus", "free").set(len(view["gpus"]) - busy)
            for gpu in view["gpus"]:
                self.gpu_busy.labels(gpu["id"]).set(1 if gpu["busy"] else 0)
        for name, units in view["resources"].items():
            self.resource_units.labels(name, "in_use").set(units["in_use"])
            self.resource_units.labels(name, "free").set(units["free"])

    # --- inside --------------------------------------------------------------------------------------

    def history(self) -> dict[str, object]:
        """Jobs submitted and finished per HISTORY_STEP_S seconds over the last HISTORY_STEPS steps,
        oldest first; the last step is the current, partial one."""
        current = int(self._clock() // HISTORY_STEP_S)
        steps = range(current - HISTORY_STEPS + 1, current + 1)
        with self._lock:
            counts = [self._steps.get(step, (0, 0)) for step in steps]
        return {
            "interval_s": HISTORY_STEP_S,
            "submitted": [c[0] for c in counts],
            "completed": [c[1] for c in counts],
        }

    def _tick(self, times: deque[float], now: float) -> None:
        step = int(now // HISTORY_STEP_S)
        with self._lock:
            times.append(now)
            self._trim(times, now)
            counts = self._steps.setdefault(step, [0, 0])
            counts[0 if times is self._submitted else 1] += 1
            if len(self._steps) > HISTORY_STEPS:
                for old in [s for s in self._steps if s <= step - HISTORY_STEPS]:
                    del self._steps[old]

    @staticmethod
    def _trim(times: deque[float], now: float) -> int:
        while times and times[0] < now - RATE_WINDOW_S:
            times.popleft()
        return len(times)

    @staticmethod
    def _observe(histogram: Histogram, start: str | None, end: str | None) -> None:
        if start and end:
            seconds = (parse_timestamp(end) - parse_timestamp(start)).total_seconds()
            histogram.observe(max(0.0, seconds))

    def _count_delivery(self, before: Job | None, after: Job) -> None:
        old = before.webhook_delivery if before is not None else None
        new = after.webhook_delivery
        if new is None or new.attempts <= (old.attempts if old is not None else 0):
            return
        delivered = new.state is DeliveryState.DELIVERED
        self.webhook_attempts.labels((DeliveryState.DELIVERED if delivered else DeliveryState.FAILED).value).inc()
        if new.state is DeliveryState.FAILED:
            self.webhook_given_up.inc()
