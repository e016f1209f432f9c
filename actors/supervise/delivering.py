"""How a Supervisor makes one attempt at a job's completion webhook and records it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from procq.actors import transitions, webhook
from procq.actors.job import Job
from procq.actors.supervise import threads

if TYPE_CHECKING:
    from datetime import datetime

    from procq.actors.dispatch.dispatcher import DispatcherProxy
    from procq.actors.mailbox import Mailbox
    from procq.actors.settings import Settings
    from procq.actors.supervise.supervisor import Supervisor
    from procq.actors.webhook import SendWebhook
    from procq.actors.webhookpool import WebhookPool

log = logging.getLogger("procq.supervisor")


class Delivering:
    """The part of the Supervisor sent on a webhook errand (`deliver`). A mixin: it works on the
    Supervisor's job and state, on the actor's thread; the HTTP call runs on the webhook pool."""

    if TYPE_CHECKING:
        _job: Job
        _settings: Settings
        _dispatcher: DispatcherProxy
        _self: Mailbox[Supervisor]
        _send: SendWebhook
        _pool: WebhookPool
        _now: Callable[[], datetime]

        def _record_then(
            self,
            job: Job,
            then: Callable[[], None],
            if_lost: Callable[[], None] | None,
            sync: tuple[str, ...] = (),
            if_moved: Callable[[], None] | None = None,
        ) -> None: ...

        def stop(self) -> None: ...

    def deliver(self) -> None:
        """Make one attempt at the completion webhook, off the actor thread; returns at once."""
        job = self._job
        args = (self._send, job.webhook, webhook.payload(job), self._settings.webhook.timeout_s, self._self)
        self._pool.run(threads.deliver, *args)

    def delivery_finished(self, error: str | None) -> None:
        """From the webhook thread: record the attempt, then hand the job back to the Dispatcher (even
        if the record failed: the attempt is then made again after a restart, never lost)."""
        job = transitions.delivery_attempted(self._job, error, self._settings.webhook, self._now())
        after = job.webhook_delivery
        assert after is not None
        log.info("job %s: webhook %s after %d attempt(s) %s", job.id, after.state, after.attempts, error or "")
        self._record_then(
            job, self._delivery_recorded, if_lost=self._delivery_recorded, if_moved=self._delivery_recorded
        )

    def _delivery_recorded(self) -> None:
        self._dispatcher.delivery_ended.defer(self._job)
        self.stop()
