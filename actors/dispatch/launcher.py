"""Starting Supervisors for the Dispatcher: one per running job, one per webhook delivery attempt."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import pykka

from procq.actors.job import Job
from procq.actors.keeper.link import KeeperLink
from procq.actors.mailbox import Mailbox
from procq.actors.settings import Settings
from procq.actors.store.base import Store
from procq.actors.supervise.monitor import Monitor
from procq.actors.supervise.spawn import Spawn
from procq.actors.supervise.supervisor import Supervisor
from procq.actors.webhook import SendWebhook
from procq.actors.webhookpool import WebhookPool

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


class Launcher:
    """The Supervisors of running jobs, each with the event its run sets when it ends. A plain
    object: only the Dispatcher's thread touches it. Messages to Supervisors are deferred: the
    Dispatcher never waits on another actor."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: DispatcherProxy,
        spawn: Spawn | None,
        now: Callable[[], datetime],
        send_webhook: SendWebhook,
        keeper: KeeperLink,
        monitor: Monitor,
        webhook_pool: WebhookPool,
        store: Store,
    ) -> None:
        self._keeper = keeper
        self._monitor = monitor
        self._settings = settings
        self._pool = webhook_pool
        self._dispatcher = dispatcher
        self._spawn = spawn
        self._now = now
        self._send = send_webhook
        self._store = store
        self._running: dict[str, tuple[Mailbox[Supervisor], threading.Event]] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._running

    def run(self, job: Job) -> None:
        """Start a Supervisor running the job."""
        finished = threading.Event()
        supervisor = self._start(job, finished)
        self._running[job.id] = (supervisor, finished)
        supervisor.run.defer()

    def adopt(self, job: Job) -> None:
        """Start a Supervisor following a run a previous server started (re-adoption at start)."""
        finished = threading.Event()
        supervisor = self._start(job, finished)
        self._running[job.id] = (supervisor, finished)
        supervisor.adopt.defer()

    def deliver(self, job: Job) -> None:
        """Start a Supervisor making one attempt at the job's completion webhook."""
        self._start(job, threading.Event()).deliver.defer()

    def cancel(self, job_id: str) -> threading.Event:
        """Ask a running job's Supervisor to cancel it; returns the event set once it has ended."""
        supervisor, finished = self._running[job_id]
        try:
            supervisor.cancel.defer()
        except pykka.ActorDeadError:
            pass  # it just ended on its own; job_ended is already on its way to the Dispatcher
        return finished

    def fencer(self, job_id: str, grace_s: float) -> Callable[[], None]:
        """A call that asks the job's Supervisor to end its run for a fence (cluster mode), safe from
        any thread: the fence must not wait for the Dispatcher's inbox, which a cut database may hold up."""
        supervisor, _ = self._running[job_id]

        def fence() -> None:
            try:
                supervisor.fence.defer(grace_s)
            except pykka.ActorDeadError:
                pass  # it ended meanwhile

        return fence

    def fence_all(self, grace_s: float) -> None:
        for job_id in list(self._running):
            self.fencer(job_id, grace_s)()

    def interrupt_all(self) -> list[threading.Event]:
        """Ask every running job's Supervisor to interrupt it (shutdown); returns their events."""
        for supervisor, _ in self._running.values():
            try:
                supervisor.interrupt.defer()
            except pykka.ActorDeadError:
                pass
        return [finished for _, finished in self._running.values()]

    def ended(self, job_id: str) -> None:
        self._running.pop(job_id, None)

    def _start(self, job: Job, finished: threading.Event) -> Mailbox[Supervisor]:
        ref = Supervisor.start(
            job,
            self._settings,
            self._dispatcher,
            finished,
            self._store,
            self._keeper,
            self._monitor,
            spawn=self._spawn,
            now=self._now,
            send_webhook=self._send,
            webhook_pool=self._pool,
        )
        return Mailbox(ref)
