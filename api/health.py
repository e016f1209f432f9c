"""GET /health: liveness and readiness, for load balancers and supervisors."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import falcon
import pykka

from procq.actors.errors import StorageError

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


class HealthResource:
    """200 when the Dispatcher answers and the jobs directory takes a write, else 503 saying which."""

    def __init__(self, dispatcher: DispatcherProxy, jobs_dir: Path) -> None:
        self._dispatcher = dispatcher
        self._jobs_dir = jobs_dir

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {
            "dispatcher": self._dispatcher_check(),
            "jobs_dir": self._jobs_dir_check(),
            "store": self._store_check(),
        }
        ready = all(value == "ok" for value in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ok" if ready else "unavailable", "checks": checks}
        if not ready:  # like every error body, it also says what is wrong in title/description
            failing = "; ".join(f"{name}: {value}" for name, value in checks.items() if value != "ok")
            resp.media |= {"title": "Not ready", "description": failing}

    def _dispatcher_check(self) -> str:
        try:
            self._dispatcher.ping().get(timeout=2.0)
        except (pykka.Timeout, pykka.ActorDeadError):
            return "not answering"
        return "ok"

    def _store_check(self) -> str:
        """ok, or why the store cannot commit; after a failure it is tried again with a trivial commit."""
        try:
            probe = self._dispatcher.probe().get(timeout=2.0)
            if probe is None:
                return "ok"
            probe.result(timeout=2.0)
        except (pykka.Timeout, pykka.ActorDeadError):
            return "unknown (the dispatcher is not answering)"
        except (StorageError, TimeoutError) as exc:
            return f"cannot commit: {exc}"
        return "ok"

    def _jobs_dir_check(self) -> str:
        probe = self._jobs_dir / f".health-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
        except OSError as exc:
            return f"not writable: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(OSError):  # a full disk creates the file, then fails the write
                probe.unlink(missing_ok=True)
        return "ok"
