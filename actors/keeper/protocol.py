"""The keeper's channel: where it listens, its auth key, and the versioned messages both sides send.

Messages are plain dicts of str/int/float/list/None (never classes), so a newer server can still talk
to an older keeper it knows the protocol of. Every request carries "op"; every reply carries "ok",
and "error" (a sentence saying what to do) when ok is False.
- hello {version, role: "control"|"events"} -> {ok, version, pid, draining}
- spawn {run, job_id, attempt, args, cwd, env, grace_s, run_as} -> {ok, pid, pid_started_at, started_at}
  run_as: a user name (--run-as) or None; that user then owns jobs/<id>/ and its output files
- stop {run, grace_s, reason} -> {ok, running}: the tree is ended; its exit record follows as usual
- list {} -> {ok, runs: [{run, job_id, attempt, pid, pid_started_at, started_at, stopping}]}
- drain {} -> {ok}: refuse new spawns, exit once the running ones have ended (upgrades, --on-stop keep)
- attach {} -> {ok}: a server is attached again; cancels an exit-when-idle
- fence {within_s, grace_s} -> {ok}: cluster mode; unless another fence comes within `within_s`
  seconds, end every run's tree (grace_s) and every run started later (keeper/fence.py); a
  single machine's server sends within_s None: no fence
An "events" connection receives {event: "exited", record: {...}} for every run that ends.

The stable minimal protocol: what every keeper version answers FOREVER, so any later (or earlier)
server can drain it and see its jobs through to the end (retiring.py). Never change these:
- where a keeper of version N is: its info file jobs/.keeper-<N>.json ({pid, version, ...}, removed
  when it exits), its channel osdeps.channel(jobs_dir, "keeper-<N>"), the key in jobs/.keeper.key;
  its lock jobs/.keeper-<N>.lock (so keepers of two versions can run side by side, never two of one);
- hello {op: "hello", role: "minimal"} (any "version") -> {ok: True, version, pid, draining};
- list, stop and drain as above (MINIMAL_OPS; only these are answered on a minimal connection);
- the exit record jobs/<id>/exit.json {run, attempt, pid, pid_started_at, ended_at, exit_code,
  signal, usage}, written before the run leaves `list`, and the run marker PROCQ_RUN=<id>.<attempt>.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from procq.actors import osdeps

TEST_VERSION = "PROCQ_TEST_KEEPER_PROTOCOL"  # tests only: "N" or "N:A,B" (speak N, understand A and B)
MINIMAL_OPS = ("hello", "list", "stop", "drain")  # answered by every keeper version, forever


def _versions(override: str | None) -> tuple[int, tuple[int, ...]]:
    """(this code's version, the versions it speaks), normally (2, (2,)); a test may pretend to be
    another release of procq (an older or a newer one) with PROCQ_TEST_KEEPER_PROTOCOL.
    Version 1 had no spawn intents and no fence: its runs cannot be judged by the rules of 2, so a
    version-1 keeper is drained (its runs end there), not re-adopted."""
    if not override:
        return 2, (2,)
    version, _, spoken = override.partition(":")
    return int(version), tuple(int(v) for v in spoken.split(",")) if spoken else (int(version),)


# VERSION: bump when a message changes meaning; the channel's name carries it. SPOKEN: the versions
# this code speaks as a client (a running keeper of one of them is re-adopted, not drained).
VERSION, SPOKEN = _versions(os.environ.get(TEST_VERSION))
LOCK = f".keeper-{VERSION}.lock"  # held by the running keeper for its whole life: two never run
INFO = f".keeper-{VERSION}.json"  # pid, start time, version: what `procq` shows, what tests check
KEY = ".keeper.key"  # the channel's auth key, readable by this user only
LOG = ".keeper.log"
_RUN = re.compile(r"([0-9a-f]{32})\.([1-9][0-9]{0,8})")


def address(jobs_dir: Path, version: int = VERSION) -> tuple[str, str]:
    """(address, family) of the keeper speaking `version` for `jobs_dir`."""
    return osdeps.channel(jobs_dir, f"keeper-{version}")


def info(version: int) -> str:
    """The info file of the keeper speaking `version` (stable: see the module's docstring)."""
    return f".keeper-{version}.json"


def running_versions(jobs_dir: Path) -> list[int]:
    """The versions of the keepers that left an info file in `jobs_dir` (a killed one may leave a stale
    file: the caller finds out when it connects)."""
    found = []
    for path in jobs_dir.glob(".keeper-*.json"):
        number = path.name[len(".keeper-") : -len(".json")]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def run_id(job_id: str, attempt: int) -> str:
    """The run marker: PROCQ_RUN=<job id>.<attempt> in every process of that attempt."""
    return f"{job_id}.{attempt}"


def parse_run(run: str) -> tuple[str, int] | None:
    """(job id, attempt) of a run marker, or None if it is not one (never a path part otherwise)."""
    match = _RUN.fullmatch(run)
    return (match.group(1), int(match.group(2))) if match else None


def load_key(jobs_dir: Path, create: bool) -> bytes:
    """The auth key in jobs/.keeper.key; made (0600, 32 random bytes) if `create` and missing.
    Raises FileNotFoundError when missing and not created, PermissionError when others may read it."""
    path = jobs_dir / KEY
    if create and not path.exists():  # only the keeper creates it, holding its lock
        tmp = jobs_dir / f"{KEY}.{secrets.token_hex(8)}.tmp"
        with osdeps.create_private(tmp) as handle:  # written whole, then renamed: never read half made
            handle.write(secrets.token_bytes(32))
            handle.flush()
            os.fsync(handle.fileno())
        osdeps.replace_file(tmp, path)
    if osdeps.open_to_others(path):
        raise PermissionError(13, "the keeper's key file may be read by other users; remove it", str(path))
    key = osdeps.read_bytes(path)
    if len(key) < 16:
        raise PermissionError(13, "the keeper's key file is too short; remove it", str(path))
    return key


def refusal(version: object) -> str | None:
    """Why a hello with `version` is refused, or None."""
    if version == VERSION:
        return None
    return (
        f"this procq keeper speaks protocol {VERSION} and the client asked for {version!r}; "
        "let it finish its jobs (drain) and start a keeper of the new version"
    )
