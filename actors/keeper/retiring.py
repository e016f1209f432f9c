"""Keepers of another protocol version found at start: drained, and their runs followed to their end.

A server speaks its own protocol version to its own keeper. A keeper of another version (an older
one left by the release before an upgrade, or a newer one after a downgrade) may still run jobs. It
is told, in the minimal protocol every version answers forever (protocol.MINIMAL_OPS), to drain:
take no new run, go on reaping and writing exit records, exit when idle. Meanwhile the server's own
keeper takes the new runs (the two use different channels, locks and info files).

One thread polls the retiring keepers' `list`: a run that has left it has its exit record on disk (a
keeper forgets a run only after writing it), handed to `on_record`. A retiring keeper that goes away
with runs left: each is handed to `on_lost` with what the keeper said of it (pid, start time), so
the caller can end its tree by identity. `stop` still reaches such a run's tree through its keeper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from procq.actors.keeper import protocol, records
from procq.actors.keeper.client import KeeperClient, KeeperError

log = logging.getLogger("procq.keeper.retiring")

OnRecord = Callable[[dict[str, Any]], None]
OnLost = Callable[[dict[str, Any]], None]


class Retiring:
    """The keepers of other versions this server drains, and their runs until each has ended.
    Thread-safe; the callbacks run on its one polling thread."""

    def __init__(self, jobs_dir: Path, on_record: OnRecord, on_lost: OnLost, interval_s: float = 0.2) -> None:
        self._jobs_dir = jobs_dir
        self._on_record = on_record
        self._on_lost = on_lost
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._keepers: dict[int, KeeperClient] = {}  # by protocol version
        self._runs: dict[str, tuple[int, dict[str, Any]]] = {}  # run -> (its keeper's version, as listed)
        self._closed = threading.Event()

    def drain_others(self, keep: Collection[int]) -> None:
        """Find the running keepers of versions not in `keep`, tell each to drain, note its runs, and
        start following them. Call once, before listing the runs of the server's own keeper."""
        for version in protocol.running_versions(self._jobs_dir):
            if version in keep:
                continue
            try:
                client = KeeperClient.connect_minimal(self._jobs_dir, version)
            except KeeperError as exc:  # a stale info file of a killed keeper, or one that refuses us
                log.info("keeper of protocol %d: not reachable (%s)", version, exc)
                continue
            try:
                client.drain()
                runs = client.runs()
            except KeeperError as exc:
                log.warning("keeper %d (protocol %d): could not drain it: %s", client.pid, version, exc)
                client.close()
                continue
            log.warning(
                "keeper %d speaks protocol %d, this server %d: it finishes its %d job(s), then exits",
                client.pid,
                version,
                protocol.VERSION,
                len(runs),
            )
            with self._lock:
                self._keepers[version] = client
                self._runs.update((run["run"], (version, run)) for run in runs)
        if self._keepers:
            threading.Thread(target=self._poll_forever, daemon=True, name="retiring-keepers").start()

    def runs(self) -> dict[str, dict[str, Any]]:
        """The runs the retiring keepers still have, by run marker."""
        with self._lock:
            return {run: listed for run, (_, listed) in self._runs.items()}

    def owns(self, run: str) -> bool:
        with self._lock:
            return run in self._runs

    def stop(self, run: str, grace_s: float, reason: str) -> bool:
        """End the run's tree through its (retiring) keeper; its record follows. False if it has no
        such run any more. Raises KeeperError if that keeper is gone."""
        with self._lock:
            version = self._runs[run][0] if run in self._runs else None
            client = self._keepers.get(version) if version is not None else None
        if client is None:
            return False
        return client.stop(run, grace_s, reason)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            keepers, self._keepers = list(self._keepers.values()), {}
        for client in keepers:
            client.close()

    def _poll_forever(self) -> None:
        while not self._closed.wait(self._interval_s):
            with self._lock:
                keepers = list(self._keepers.items())
            if not keepers:
                return
            for version, client in keepers:
                try:
                    listed: set[str] | None = {run["run"] for run in client.runs()}
                except KeeperError:
                    listed = None  # it went away (once idle, a drained keeper exits)
                self._ended(version, client, listed)

    def _ended(self, version: int, client: KeeperClient, listed: set[str] | None) -> None:
        """Hand over the runs of `version` that have left its list (all of them if it is gone)."""
        with self._lock:
            ended = [(run, one) for run, (v, one) in self._runs.items() if v == version and run not in (listed or ())]
            for run, _ in ended:
                del self._runs[run]
            if listed is None:
                self._keepers.pop(version, None)
        if listed is None:
            client.close()
            log.info("keeper %d (protocol %d) has exited", client.pid, version)
        for run, one in ended:
            record = records.read(self._jobs_dir / one["job_id"], one["attempt"])
            try:
                if record is not None:
                    self._on_record(record)
                else:
                    self._on_lost(one)
            except Exception:  # one bad handler must not stop following the others
                log.exception("run %s: handling its end failed", run)
