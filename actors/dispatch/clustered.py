"""The Dispatcher of a cluster node: queued jobs wait in PostgreSQL, and each node claims what its free
worker slots can run (actors/cluster/claim.py); everything about running them is the single-node
Dispatcher's. Questions about jobs this node does not run are answered from the database."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from procq.actors.dispatch import unstarted
from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.dispatch.receipts import Accepted, carry_on, if_failed
from procq.actors.errors import JobConflict
from procq.actors.job import Job, Status, timestamp
from procq.actors.store.base import Recorded

if TYPE_CHECKING:  # psycopg is imported in cluster mode only
    from procq.actors.cluster.node import ClusterNode


class ClusterDispatcher(Dispatcher):
    """Holds only the jobs this node runs or owes a webhook for; the rest are the database's.

    Not yet here (README, "Cluster mode"): queues' parallelism and pause from --queue or PUT /queues
    (the claim reads the database's `queues` table), GPU assignment of claimed jobs, failing the
    dependents of a failed job, the keeper keeping a node's jobs across a server restart."""

    def __init__(self, *args: Any, cluster: ClusterNode, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cluster = cluster

    def on_start(self) -> None:
        super().on_start()
        self._cluster.start(self._self.fenced.defer, self._self)

    # --- asked by the API ------------------------------------------------------------------------

    def stats(self, owner: str | None = None) -> dict[str, Any]:
        stats = super().stats(owner)
        stats["counts"] = {status.value: n for status, n in self._store.counts(owner).items()}  # every node's
        return stats

    def nodes(self) -> list[dict[str, Any]]:
        return self._cluster.nodes()

    def kept_output(self, job_id: str, stream: str) -> Any:
        return self._store.kept_output(job_id, stream)  # type: ignore[attr-defined] - the PostgreSQL store

    def cancel(self, job_id: str) -> threading.Event | Recorded:
        """As the single node's, for a job anywhere: a queued one is canceled unless a node claimed it
        meanwhile; one running on another node is ended by that node, asked through the database."""
        if job_id in self._launcher:
            return super().cancel(job_id)
        job = self.get(job_id)
        if job.status is Status.IN_QUEUE:
            canceled = unstarted.cancel(job, timestamp(self._now()))
            commit = self._store.update([canceled])
            if commit.result(timeout=10) == 1:  # 0: claimed since it was read (its lease fenced us off)
                self._ended(canceled)
                return Recorded.of(commit)
            job = self.get(job_id)
        if job.status is Status.IN_PROGRESS:
            done = self._cluster.request_cancel(job_id, self._settings.grace_s + 30)
            if done is not None:
                return done
            job = self.get(job_id)
        raise JobConflict(job.id, job.status.value, "cancel", "IN_QUEUE or IN_PROGRESS")

    # --- told by the cluster loop and Supervisors ------------------------------------------------

    @carry_on
    def cancel_here(self, job_id: str) -> None:
        """Another node asked for a job this node runs to be canceled: end it, then answer."""
        if job_id in self._launcher:
            ended = self._launcher.cancel(job_id)
        else:
            ended = threading.Event()
            ended.set()
        self._cluster.answer_when(job_id, ended)

    @carry_on
    def fenced(self, why: str) -> None:
        """This node lost (or could not renew) its lease: its runs stop before another node may take them."""
        self._launcher.interrupt_all()

    @carry_on
    def job_ended(self, job: Job) -> None:
        self._launcher.ended(job.id)
        self._scheduler.ended(job.id)
        if job.status is Status.IN_QUEUE:  # a retry or an interrupted run: any node may claim it
            self._table.put(job)  # watchers see it queued again
            self._table.release(job.id)
            self._cluster.poke()
        else:
            self._ended(job)
        self._pump()

    # --- inside ----------------------------------------------------------------------------------

    def _create(self, jobs: list[Job]) -> Accepted:
        """New jobs wait in the database for whichever node claims them; every node is hinted."""
        commit = self._store.create(jobs)
        commit.add_done_callback(functools.partial(if_failed, self._self.not_created, [job.id for job in jobs]))
        commit.add_done_callback(lambda done: done.exception() is None and self._cluster.poke())
        self._self.pump.defer()
        return Accepted(tuple(jobs), True, commit)

    def _pump(self) -> None:
        """Claim what the free worker slots (and free units of resources) can run, then as the single node."""
        free = self._settings.workers - self._scheduler.busy()
        if self._accepting and free > 0 and not self._held():
            for claimed in self._cluster.claim(free, self._free_units()):
                # the run starts from the queued job: the Supervisor records the attempt the claim counted
                job = dataclasses.replace(claimed.before, node=self._cluster.name)
                os.makedirs(os.path.join(self._settings.jobs_dir, job.id), exist_ok=True)
                self._table.put(job)
                self._scheduler.adopt(job)
                self._launcher.run(job)
        super()._pump()

    def _held(self) -> bool:
        return time.monotonic() < self._held_until

    def _free_units(self) -> dict[str, int]:
        used: Counter[str] = Counter()
        for job_id in self._scheduler.running_ids():
            for name, units in self._table[job_id].requires:
                used[name] += units
        return {name: total - used[name] for name, total in self._settings.node.totals().items()}
