"""The Dispatcher of a cluster node: queued jobs wait in PostgreSQL, and each node claims what its free
worker slots can run (actors/cluster/claim.py); everything about running them is the single-node
Dispatcher's. Questions about jobs this node does not run are answered from the database."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from procq.actors.cluster import queues as cluster_queues
from procq.actors.cluster.claimer import Claimer
from procq.actors.dispatch import unstarted
from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.dispatch.receipts import Accepted, carry_on, if_failed
from procq.actors.errors import JobConflict, LeaseMoved
from procq.actors.job import Job, Status, timestamp
from procq.actors.store.base import Recorded, Store

if TYPE_CHECKING:  # psycopg is imported in cluster mode only
    from procq.actors.cluster.claim import Claimed
    from procq.actors.cluster.node import ClusterNode


class ClusterDispatcher(Dispatcher):
    """Holds only the jobs this node runs or owes a webhook for; the rest are the database's.

    A claimed job is given concrete GPUs (and units) by the Scheduler's allocator, as on a single node."""

    def __init__(self, *args: Any, cluster: ClusterNode, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cluster = cluster
        self._creating: list[tuple[Future[int], int]] = []  # commits of new jobs not yet done, with their size
        self._claiming = False  # a claim is on the claimer's thread: at most one at a time
        self._pump_again = False  # asked to pump meanwhile: claim again once it is answered

    def on_start(self) -> None:
        put_back = functools.partial(_put_back, self._store, self._cluster)  # on the claimer's thread too
        self._claimer = Claimer(self._cluster.claim, self.actor_ref.proxy().claimed.defer, put_back)
        super().on_start()
        self._retention.leftovers = self._store.leftovers  # type: ignore[attr-defined] - the PostgreSQL store
        for job_id in self._scheduler.running_ids():  # runs re-adopted at start are fenced as claimed ones
            if job_id in self._launcher:
                self._cluster.running(job_id, self._launcher.fencer(job_id, self._cluster.fence_grace_s))
        self._cluster.start(self._self.fenced.defer, self._self)

    def on_stop(self) -> None:
        self._claimer.stop()  # a claim still in flight is put back in the queue (it cannot be delivered)
        super().on_stop()

    # --- asked by the API ------------------------------------------------------------------------

    def stats(self, owner: str | None = None, counts: bool = True) -> dict[str, Any]:
        stats = super().stats(owner, counts=False)
        if counts:  # every node's (the API reads them itself: api/database.py)
            stats["counts"] = {status.value: n for status, n in self._store.counts(owner).items()}
        return stats

    def nodes(self) -> list[dict[str, Any]]:
        return self._cluster.nodes()

    def peer(self, name: str) -> dict[str, Any] | None:
        return self._cluster.peer(name)

    def queues(self) -> list[dict[str, Any]]:
        with self._store.connection() as conn:  # type: ignore[attr-defined] - the PostgreSQL store
            return cluster_queues.views(conn)

    def set_queue(self, name: str, parallelism: int | None = None, paused: bool | None = None) -> dict[str, Any]:
        """Change a queue for every node (the claim reads the `queues` table); returns its view."""
        with self._store.connection() as conn:  # type: ignore[attr-defined]
            cluster_queues.configure(conn, name, parallelism, paused)
            view = next(q for q in cluster_queues.views(conn) if q["name"] == name)
        self._cluster.poke()  # a resumed or widened queue may start jobs on any node now
        return view

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
            try:
                if commit.result(timeout=10) == 1:
                    self._ended(canceled)
                    return Recorded.of(commit)
            except LeaseMoved:  # claimed since it was read: the node running it is asked below
                pass
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
    def deliver_owed(self, jobs: list[Job]) -> None:
        """This node adopted the webhooks of jobs whose node is gone (actors/cluster/owed.py): deliver them."""
        for job in jobs:
            if job.id in self._deliveries:  # already on its way from here
                continue
            self._table.put(job)
            self._deliveries.owe(job)
        self._pump()

    def claimed(self, claims: list[Claimed]) -> None:
        """The claimer's answer: start what was claimed (or put it back if this node stopped taking
        jobs meanwhile), and claim again while jobs came or a pump was asked for meanwhile."""
        self._claiming = False
        free = self._settings.workers - self._scheduler.busy()
        startable = self._accepting and not self._held() and not self._cluster.fenced()
        taken = claims[: max(0, free)] if startable else []
        _put_back(self._store, self._cluster, claims[len(taken) :])
        for claimed in taken:
            # the run starts from the queued job: the Supervisor records the attempt the claim counted
            job = dataclasses.replace(claimed.before, node=self._cluster.name)
            assignment = self._scheduler.start_claimed(job)
            if assignment is None:  # the claim fitted the free units it was told; never expected
                _put_back(self._store, self._cluster, [claimed])
                continue
            if assignment.gpus or assignment.counted:  # shown at once; the child's devices are set from it
                job = dataclasses.replace(job, assigned=assignment.to_dict())
            os.makedirs(os.path.join(self._settings.jobs_dir, job.id), exist_ok=True)
            self._table.put(job)
            self._launcher.run(job)
            self._cluster.running(job.id, self._launcher.fencer(job.id, self._cluster.fence_grace_s))
        if taken or self._pump_again:
            self._pump_again = False
            self._pump()

    @carry_on
    def fenced(self, why: str) -> None:
        """This node lost (or could not renew) its lease: its runs stop before another node may take
        them (the fence asked their Supervisors directly already; this covers runs started since)."""
        self._launcher.fence_all(self._cluster.fence_grace_s)

    @carry_on
    def job_ended(self, job: Job) -> None:
        super().job_ended(job)
        self._cluster.done(job.id)  # only now may this node claim the job again (see ClusterNode.claim)

    @carry_on
    def let_go(self, job_id: str) -> None:
        super().let_go(job_id)
        self._cluster.done(job_id)

    @carry_on
    def run_not_started(self, job: Job) -> None:
        super().run_not_started(job)
        self._cluster.done(job.id)

    # --- inside ----------------------------------------------------------------------------------

    def _create(self, jobs: list[Job]) -> Accepted:
        """New jobs wait in the database for whichever node claims them; every node is hinted. A job
        whose dependency already failed (or is unknown) fails at once, as on a single machine."""
        commit = self._store.create(jobs)
        self._creating.append((commit, len(jobs)))
        commit.add_done_callback(functools.partial(if_failed, self._self.not_created, [job.id for job in jobs]))
        commit.add_done_callback(lambda done: done.exception() is None and self._cluster.poke())
        answered = []
        for job in jobs:
            reason = self._never_runs(job)
            if reason is not None:
                job = self._fail_queued(job, reason)  # committed after the creation (one writer, in order)
                self._ended(job)
            answered.append(job)
        self._self.pump.defer()
        return Accepted(tuple(answered), True, commit)

    def _queued(self) -> int:
        """The whole cluster's queued jobs (the database's count) and this node's not committed yet.
        Nodes admitting jobs at the same moment may each pass the last free places (by a few at most)."""
        self._creating = [(commit, size) for commit, size in self._creating if not commit.done()]
        with self._store.connection() as conn:  # type: ignore[attr-defined] - the PostgreSQL store
            return cluster_queues.queued(conn) + sum(size for _, size in self._creating)

    def _enqueue(self, job: Job) -> Job | None:
        """A job queued again (a retry, an interrupted run, an attempt that could not be recorded)
        goes back to the database for any node, never into this node's scheduler."""
        reason = self._never_runs(job)
        if reason is not None:
            return self._fail_queued(job, reason)
        if self._store.lease_of(job.id) is not None:  # type: ignore[attr-defined] - claimed, never recorded
            self._store.update([job])  # back to IN_QUEUE under the lease; the update drops it
        self._table.release(job.id)
        self._cluster.poke()
        return None

    def _never_runs(self, job: Job) -> str | None:
        for dependency in job.after:
            status = self._catalog.status_of(dependency)
            if status is None:
                return f"dependency {dependency} does not exist; the job was not run"
            if status in (Status.FAILED, Status.CANCELED):
                return f"dependency {dependency} ended {status.value}; the job was not run"
        return None

    def _ended(self, job: Job) -> None:
        """As the single node's; and the jobs anywhere that wait for a job that did not complete fail,
        a chain of any length (the claim never starts them: their dependency is not COMPLETED)."""
        pending = [job]
        while pending:
            ended = pending.pop()
            super()._ended(ended)
            if ended.status.terminal and ended.status is not Status.COMPLETED:
                with self._store.connection() as conn:  # type: ignore[attr-defined]
                    waiting = cluster_queues.waiting_for(conn, ended.id)
                reason = f"dependency {ended.id} ended {ended.status.value}; the job was not run"
                pending.extend(self._fail_queued(dependent, reason) for dependent in waiting)

    def _pump(self) -> None:
        """Ask the claimer for what the free worker slots (and free units of resources) can run, then
        as the single node. The claim's answer comes as a message (`claimed`)."""
        free = self._settings.workers - self._scheduler.busy()
        if self._accepting and free > 0 and not self._held():
            if self._claiming:
                self._pump_again = True
            else:
                self._claiming = True
                self._claimer.ask(free, self._free_units())
        super()._pump()

    def _held(self) -> bool:
        return time.monotonic() < self._held_until

    def _free_units(self) -> dict[str, int]:
        return self._scheduler.free()


def _put_back(store: Store, cluster: ClusterNode, claims: list[Claimed]) -> None:
    """Claimed jobs this node will not start: queued again under their lease (from any thread)."""
    if claims:
        store.update([claimed.before for claimed in claims])
        cluster.poke()
