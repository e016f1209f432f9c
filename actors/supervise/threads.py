"""The bodies of a Supervisor's helper threads: each blocks so the actor does not, then reports back.

Module-level functions, so they cannot touch the actor's attributes: they get what they need as
arguments and talk to the Supervisor only through its mailbox."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pykka
from procq.actors import osdeps
from procq.actors.job import Usage
from procq.actors.mailbox import Mailbox, report
from procq.actors.supervise.progress import Progress, Reporter
from procq.actors.supervise.sampler import GpuMemory, ProcessTree
from procq.actors.webhook import SendWebhook

if TYPE_CHECKING:
    from procq.actors.supervise.supervisor import Supervisor

log = logging.getLogger("procq.supervisor")


def report_exit(child: subprocess.Popen[bytes], supervisor: Mailbox[Supervisor]) -> None:
    """Waiter thread: reap the child, with what the OS says it used, and report `process_exited`."""
    usage = None
    try:
        code, measured = osdeps.wait_child(child)
        usage = Usage(*measured) if measured else None
    except Exception:  # usage is a nicety: the exit code must reach the Supervisor whatever happens
        log.exception("job process %d: could not read its resource usage", child.pid)
        code = child.wait()
    report(lambda: supervisor.process_exited.defer(code, usage))


def stop_tree(pid: int, created: float, grace_s: float, supervisor: Mailbox[Supervisor]) -> None:
    """Stopper thread: end the job's whole process tree, then report `tree_stopped`."""
    try:
        survivors = osdeps.stop_tree(pid, created, grace_s)
    except Exception:  # a thread that dies silently would leave the cancel waiting forever
        log.exception("ending the process tree of pid %d failed", pid)
        survivors = [pid]
    report(lambda: supervisor.tree_stopped.defer(survivors))


def limit_reached(supervisor: Mailbox[Supervisor], error: str) -> None:
    """Timeout timer: the run went past its timeout_seconds."""
    report(lambda: supervisor.limit_reached.defer(error))


def deliver(send: SendWebhook, url: str, body: bytes, timeout_s: float, supervisor: Mailbox[Supervisor]) -> None:
    """Webhook thread: one attempt at the completion webhook, reported as `delivery_finished`."""
    try:
        error = send(url, body, timeout_s)
    except Exception as exc:  # counted as a failed attempt, so the delivery is retried, then given up
        log.exception("webhook delivery to %s failed unexpectedly", url)
        error = f"internal error in procq: {exc!r}"
    report(lambda: supervisor.delivery_finished.defer(error))


def watch(
    pid: int,
    created: float,
    outputs: tuple[Path, Path],
    interval_s: float,
    stopped: threading.Event,
    supervisor: Mailbox[Supervisor],
    progress: Progress | None,
    gpu_memory: GpuMemory | None = None,
) -> None:
    """Watch thread: sample the run every `interval_s` until `stopped` is set, telling the Supervisor
    each sample (it decides about limits); drive the progress webhooks alongside."""
    reporter = Reporter(progress, outputs[1]) if progress is not None else None
    if reporter is not None:
        reporter.started()
    tree: ProcessTree | None = None
    # The first sample comes one interval in: walking the process table costs milliseconds, and most
    # jobs of a busy server end sooner (their usage is read when they are reaped).
    while not stopped.wait(interval_s):
        tree = tree or ProcessTree(pid, created, gpu_memory)
        sample = tree.measure(outputs)
        try:
            supervisor.sampled.defer(sample)
        except pykka.ActorDeadError:
            break
        if reporter is not None:
            reporter.tick()
    if reporter is not None:
        reporter.finished()
