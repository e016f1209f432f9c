"""Spawn intents: jobs/<id>/spawn.json, written durably by the keeper before it starts an attempt.

It tells a restarting server "this attempt may have reached a process" from "it never did". The
server records an attempt before asking for it; if the server and the keeper both die in between,
the attempt has no intent, so it never ran: it is run again under the same number, not counted. An
intent with no process and no exit record may have run (the keeper died around the spawn): it
counts. The keeper also refuses to start a run whose intent exists, so a spawn request that arrives
late (sent by a server that died) never starts an attempt a second time.

Written whole (tmp file, fsync, rename, directory fsync) before the spawn: a crash at any instant,
power loss included, leaves the previous intent or this one. One file per job; it names its attempt.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from procq.actors import osdeps

SPAWN_INTENT = "spawn.json"


def write(job_dir: Path, intent: dict[str, Any]) -> None:
    """Replace jobs/<id>/spawn.json with `intent` ({run, attempt, ...}) atomically and durably.
    Raises OSError (then nothing may be spawned)."""
    data = json.dumps(intent, separators=(",", ":"), sort_keys=True).encode("utf-8")
    tmp = job_dir / f"{SPAWN_INTENT}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        osdeps.replace_file(tmp, job_dir / SPAWN_INTENT)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    osdeps.fsync_dir(job_dir)


def read(job_dir: Path, attempt: int) -> dict[str, Any] | None:
    """The spawn intent of `attempt` in `job_dir`, or None if the keeper never got to start it (none,
    another attempt's, or unreadable: it is written whole or not at all)."""
    try:
        intent = json.loads(osdeps.read_bytes(job_dir / SPAWN_INTENT))
    except (OSError, ValueError):
        return None
    if not isinstance(intent, dict) or intent.get("attempt") != attempt:
        return None
    return intent
