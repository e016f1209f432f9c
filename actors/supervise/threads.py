"""The bodies of a Supervisor's helper threads: each blocks so the actor does not, then reports back.

Module-level functions, so they cannot touch the actor's attributes: they get what they need as
arguments and talk to the Supervisor only through its mailbox. (A run needs no thread of its own:
its end comes from the KeeperLink's reader, its timeout and samples from the Monitor.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from procq.actors.mailbox import Mailbox, report
from procq.actors.webhook import SendWebhook

if TYPE_CHECKING:
    from procq.actors.supervise.supervisor import Supervisor

log = logging.getLogger("procq.supervisor")


def deliver(send: SendWebhook, url: str, body: bytes, timeout_s: float, supervisor: Mailbox[Supervisor]) -> None:
    """Webhook thread: one attempt at the completion webhook, reported as `delivery_finished`."""
    try:
        error = send(url, body, timeout_s)
    except Exception as exc:  # counted as a failed attempt, so the delivery is retried, then given up
        log.exception("webhook delivery to %s failed unexpectedly", url)
        error = f"internal error in procq: {exc!r}"
    report(lambda: supervisor.delivery_finished.defer(error))
