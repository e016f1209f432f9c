"""The server's one link to its keeper: requests from any actor, exits routed to whoever follows a run.

One reader thread serves every running job (no thread per job): the Supervisor of a run registers
`follow(run, on_end)` before it asks for the spawn, and hears of the end exactly once: the exit record,
or a lost end when the keeper itself went away (then its tree has already been ended here, by pid,
start time and run marker, so a rerun never overlaps the lost one). That holds for a keeper lost in
the middle of a spawn too: the run's processes are found by their marker and ended, and the end says
whether the attempt may have reached a process at all (its spawn intent, intents.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from procq.actors import osdeps
from procq.actors.keeper import intents, protocol, records
from procq.actors.keeper.client import KeeperClient, KeeperError, KeeperLost
from procq.actors.keeper.retiring import Retiring

log = logging.getLogger("procq.keeper.link")

_LOSS_WAIT_S = 5.0  # after a broken request: how long the events connection has to confirm the keeper is gone

OnEnd = Callable[["End"], None]


@dataclass(frozen=True, slots=True)
class End:
    """How a followed run ended: its exit record, or None with `lost` saying why there is none.
    `may_have_run` is False only for a run lost in the middle of its spawn before the keeper recorded
    its spawn intent: no process of it ever existed, so it may start again under the same number."""

    run: str
    record: dict[str, Any] | None
    lost: str | None = None
    may_have_run: bool = True


class KeeperLink:
    """Owns the KeeperClient of a server. Thread-safe; its callbacks run on the reader thread (or a
    short-lived thread after a keeper loss) and must only send messages."""

    def __init__(self, jobs_dir: Path, grace_s: float = 5.0, fenced: bool = False) -> None:
        self._jobs_dir = jobs_dir
        self._fenced = fenced  # cluster mode: the node's lease fences the keeper (keeper/fence.py)
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._following: dict[str, tuple[OnEnd, int | None, float | None]] = {}
        self._spawning: dict[str, KeeperClient] = {}  # runs whose spawn request is out, and to which keeper
        self._spawn_lost: set[str] = set()  # of those, the ones whose keeper was lost meanwhile
        self._connect_lock = threading.Lock()  # one (re)connection at a time
        self._client: KeeperClient | None = None
        self._closed = False
        self._fence: tuple[float, float] | None = None  # (monotonic deadline, grace): sent to every keeper
        self._lost_ends: dict[str, End] = {}  # ends of retiring keepers' runs not (yet) followed
        # Re-adopt a running keeper of a version this code speaks (the newest), else start our own;
        # then drain every other: its runs end there, followed by `_retiring`, new ones run on ours.
        spoken = [v for v in protocol.running_versions(jobs_dir) if v in protocol.SPOKEN]
        self._version = max(spoken, default=protocol.VERSION)
        self._retiring = Retiring(jobs_dir, self._exited, self._retired_lost)
        self._retiring.drain_others(keep={self._connect().version})

    @property
    def keeper_pid(self) -> int:
        return self._connected().pid

    def _connect(self) -> KeeperClient:
        client = None
        if self._version != protocol.VERSION:
            try:
                client = KeeperClient.connect(self._jobs_dir, self._version)
            except KeeperError:  # gone: from now on, a keeper of this code's version
                self._version = protocol.VERSION
        if client is None:
            client = KeeperClient.ensure(self._jobs_dir)
        client.attach()
        client.follow(self._exited, functools.partial(self._lost, client))
        if self._fence is not None:  # a keeper started after the last renewal is fenced like the last one
            client.fence(self._fence[0] - time.monotonic(), self._fence[1])
        elif not self._fenced:  # a single machine: a fence a cluster node left on this keeper must not end our runs
            try:
                client.fence(None, 0.0)
            except KeeperError as exc:  # a keeper of an older protocol has no fence to lift
                log.debug("keeper: no fence to lift: %s", exc)
        self._client = client
        return client

    def _connected(self) -> KeeperClient:
        """The client, connecting again (starting a new keeper) after the last one was lost."""
        with self._connect_lock:
            if self._closed:  # a late request after the server let its keeper go must not start another
                raise KeeperError("this server has closed its link to the keeper")
            client = self._client
            return client if client is not None else self._connect()

    def follow(self, run: str, on_end: OnEnd, pid: int | None = None, pid_started_at: float | None = None) -> None:
        """Call `on_end` once when `run` ends. Register before spawning; when re-adopting, register
        first (with its root's identity), then look for its exit record, so an end between the two is
        not missed. Following a run again keeps the identity known of it."""
        with self._lock:
            lost = self._lost_ends.pop(run, None)
            if lost is None:
                if pid is None:
                    _, pid, pid_started_at = self._following.get(run, (on_end, None, None))
                self._following[run] = (on_end, pid, pid_started_at)
        if lost is not None:  # its retiring keeper went away before anyone followed the run
            on_end(lost)

    def spawn(
        self,
        job_id: str,
        attempt: int,
        args: list[str],
        env: dict[str, str],
        cwd: Path | None,
        run_as: str | None = None,
    ) -> dict[str, Any]:
        """Start the attempt (follow it first), as the user `run_as` if given. Raises KeeperError with
        the keeper's reason; KeeperLost if the keeper died before it answered: then the run's end still
        reaches its follower, once its processes (if any) are gone (`_end_lost`)."""
        run = protocol.run_id(job_id, attempt)
        try:
            client = self._connected()
        except KeeperLost as exc:  # lost while connecting: no spawn was asked of it
            raise KeeperError(f"could not reach the keeper: {exc}") from exc
        with self._lock:
            self._spawning[run] = client
        try:
            started = client.spawn(job_id, attempt, args, env, cwd, self._grace_s, run_as)
        except KeeperLost:
            self._drop(client)
            self._end_lost_spawn(run, None, None)
            raise
        finally:
            with self._lock:
                self._spawning.pop(run, None)
                lost_meanwhile = run in self._spawn_lost
                self._spawn_lost.discard(run)
        self.adopted(run, started["pid"], started["pid_started_at"])
        if lost_meanwhile:  # it started, then its keeper died before this thread saw the reply
            self._end_lost_spawn(run, started["pid"], started["pid_started_at"])
        return started

    def fence(self, deadline: float, grace_s: float) -> None:
        """Cluster mode: the node's lease surely holds until `deadline` (time.monotonic); past it the
        keeper ends every run (with `grace_s`) unless fenced again. Never raises: the server fences its
        own runs at the same moment while it lives."""
        self._fence = (deadline, grace_s)
        client = self._client  # never starts a keeper here (the heartbeat's thread): the next one gets it on connecting
        if client is None:
            return
        try:
            client.fence(deadline - time.monotonic(), grace_s)
        except KeeperError as exc:
            log.warning("keeper: could not pass on the lease deadline: %s", exc)

    def adopted(self, run: str, pid: int, pid_started_at: float) -> None:
        """Remember the identity of a followed run's root, to end its tree should the keeper die."""
        with self._lock:
            if run in self._following:
                self._following[run] = (self._following[run][0], pid, pid_started_at)

    def stop(self, run: str, reason: str, grace_s: float | None = None) -> bool:
        """End the run's tree through the keeper; its end arrives as usual. False if not running."""
        grace = self._grace_s if grace_s is None else grace_s
        if self._retiring.owns(run):  # it runs on a keeper of another version, which still ends trees
            return self._retiring.stop(run, grace, reason)
        return self._connected().stop(run, grace, reason)

    def settle(self, run: str, job_dir: Path, attempt: int) -> None:
        """After `follow` of a run found at restart: if its exit record is already on disk, deliver
        that end now (exactly once: whichever of this and the reader takes the follower delivers)."""
        record = records.read(job_dir, attempt)
        if record is None:
            return
        with self._lock:
            found = self._following.pop(run, None)
        if found is not None:
            found[0](End(run, record))

    def unfollow(self, run: str) -> None:
        with self._lock:
            self._following.pop(run, None)

    def running(self) -> dict[str, dict[str, Any]]:
        """The runs the keepers have now (ours, and those of other versions draining), by run marker."""
        return {**self._retiring.runs(), **{run["run"]: run for run in self._connected().runs()}}

    def close(self, keep_running: bool) -> None:
        """Detach: with `keep_running` the keeper goes on with its runs and exits once idle; else it
        exits now if idle (the server has stopped every run itself)."""
        with self._connect_lock:
            client, self._client, self._closed = self._client, None, True
        self._retiring.close()  # they are draining already: they finish their runs and exit
        if client is None:
            return
        with self._lock:
            self._following.clear()  # a close is not a loss: nothing is reported
        try:
            client.drain()
        except KeeperError as exc:
            log.warning("keeper: could not ask it to drain: %s", exc)
        client.close()
        del keep_running  # both ways drain: the keeper exits once no run is left

    def _exited(self, record: dict[str, Any]) -> None:
        with self._lock:
            found = self._following.pop(record["run"], None)
        if found is not None:
            found[0](End(record["run"], record))

    def _lost(self, client: KeeperClient) -> None:
        """The keeper went away: end every followed run's tree, then report each end once. The next
        request starts a new keeper."""
        with self._connect_lock:
            if self._client is not client:
                return  # closed on purpose, or already replaced
            self._client = None
        client.close()
        lost = {}
        with self._lock:
            for run, one in list(self._following.items()):
                if self._retiring.owns(run):  # the runs of retiring keepers are not lost with ours
                    continue
                if one[1] is None:  # no process known: its spawner settles it (`spawn`), else it starts later
                    if self._spawning.get(run) is client:
                        self._spawn_lost.add(run)
                    continue
                lost[run] = one
                del self._following[run]
        if lost:
            log.error("keeper: lost with %d running job(s); ending their process trees", len(lost))
        for run, (on_end, pid, created) in lost.items():
            threading.Thread(target=_end_lost, args=(self._jobs_dir, run, on_end, pid, created, self._grace_s)).start()

    def _drop(self, client: KeeperClient) -> None:
        """A request to `client`'s keeper broke off. Its events connection tells the loss of a dead
        keeper at once (`_lost`); wait for that, bounded, and past it treat the keeper as lost all the
        same, so every followed run hears of its end."""
        deadline = time.monotonic() + _LOSS_WAIT_S
        while self._client is client and time.monotonic() < deadline:
            time.sleep(0.02)
        self._lost(client)  # does nothing if the reader got there first

    def _end_lost_spawn(self, run: str, pid: int | None, created: float | None) -> None:
        """The keeper was lost while (or just after) it was asked to start `run`: end what of it
        exists, by identity if known and by marker, and report its end to its follower."""
        with self._lock:
            found = self._following.pop(run, None)
        if found is not None:
            args = (self._jobs_dir, run, found[0], pid, created, self._grace_s)
            threading.Thread(target=_end_lost, args=args, daemon=True, name="spawn-lost").start()

    def _retired_lost(self, listed: dict[str, Any]) -> None:
        """A retiring keeper went away before the run's record: end its tree by identity, then report
        it lost (to its follower, or to the one that follows it later)."""
        run, pid, created = listed["run"], listed.get("pid"), listed.get("pid_started_at")
        args = (self._jobs_dir, run, self._deliver_lost, pid, created, self._grace_s)
        threading.Thread(target=_end_lost, args=args, daemon=True, name="retired-lost").start()

    def _deliver_lost(self, end: End) -> None:
        with self._lock:
            found = self._following.pop(end.run, None)
            if found is None:
                self._lost_ends[end.run] = end
        if found is not None:
            found[0](end)


def _end_lost(jobs_dir: Path, run: str, on_end: OnEnd, pid: int | None, created: float | None, grace: float) -> None:
    """End what is left of a run whose keeper was lost, then report its end: the restart rule
    (`found`), live. A run with no pid was lost mid-spawn: its processes are found by marker only."""
    parsed = protocol.parse_run(run)
    if parsed is None:
        on_end(End(run, None, "the keeper process that ran the job was lost"))
        return
    job_dir, attempt = jobs_dir / parsed[0], parsed[1]
    record = records.read(job_dir, attempt)
    if record is not None:  # it ended and was recorded before the keeper died
        on_end(End(run, record))
        return
    survivors = osdeps.stop_run(pid or 0, created or 0.0, run, grace)  # identity checked; the marker in any case
    if survivors:
        log.error("run %s: processes %s survived after the keeper was lost", run, survivors)
    if pid is None and intents.read(job_dir, attempt) is None:  # the keeper died before it could spawn
        on_end(End(run, None, "the keeper process was lost before it started the job", may_have_run=False))
        return
    on_end(End(run, None, "the keeper process that ran the job was lost; its processes were ended"))


class Found(Enum):
    """What a server starting up finds of a job it had left IN_PROGRESS."""

    ENDED = "ended"  # an exit record of this attempt exists: conclude from it
    RUNNING = "running"  # a keeper still runs it: follow it again
    ORPHANED = "orphaned"  # no keeper runs it but its process lives: end the tree, then run again
    LOST = "lost"  # nothing alive and no record, but the keeper may have started it: it counts
    NOT_STARTED = "not started"  # recorded, but no keeper ever got to start it (no spawn intent)


def found(
    record: dict[str, Any] | None,
    keeper_runs: dict[str, Any],
    run: str,
    process_alive: bool,
    intended: bool = True,
) -> Found:
    """The restart rule, in order: a record wins (the end was observed); then a keeper that runs it;
    then a live process (matched by pid and start time, or by its run marker) that nobody keeps; then
    no spawn intent (intents.py: the keeper writes it durably before the spawn, so without it no
    process ever existed: the server died between recording the attempt and its start); else lost."""
    if record is not None:
        return Found.ENDED
    if run in keeper_runs:
        return Found.RUNNING
    if process_alive:
        return Found.ORPHANED
    return Found.LOST if intended else Found.NOT_STARTED
