"""API keys: the keys file (hashed keys, scopes, revocation) and lookups in constant time. `run.py keys` is
server/keys.py; /admin/keys is api/admin.py."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from procq.actors import backoff, osdeps
from procq.actors.errors import KeyFileError, KeyNotFound
from procq.actors.job import timestamp, utc_now

log = logging.getLogger("procq.keys")

SCOPES = ("jobs:submit", "jobs:read", "jobs:cancel", "admin")
KEY_PREFIX = "pq_"  # makes a leaked key easy to recognise (secret scanners, logs)
KEY_ID = re.compile(r"[0-9a-f]{16}")
KEY_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_LOCK_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored: never the key itself, only its SHA-256."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    sha256: str
    revoked_at: str | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def public(self) -> dict[str, Any]:
        """The key as GET /admin/keys and `keys list` show it: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def hash_key(key: str) -> str:
    # SHA-256 is enough here, no slow KDF (bcrypt, scrypt): a key is 32 random bytes chosen by the
    # server, not a password a person picked, so there is no dictionary to try and 2**256 guesses to
    # make. A slow hash would only make every request slower.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_scopes(scopes: object) -> tuple[str, ...]:
    """The scopes as a tuple; raises ValueError naming what is wrong and what is allowed."""
    allowed = ", ".join(SCOPES)
    if not isinstance(scopes, list | tuple) or not scopes:
        raise ValueError(f"scopes must be a non-empty list of: {allowed}")
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"scopes: {scope!r} is not a scope; allowed: {allowed}")
    return tuple(dict.fromkeys(scopes))  # drop repeats, keep order


def check_name(name: object) -> str:
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise ValueError(f"name: {name!r} is not allowed; use 1 to 64 characters of A-Z a-z 0-9 _ . : @ -")
    return name


class KeyStore:
    """The keys file, shared by the server and `run.py keys` (another process).

    Every lookup first stats the file (microseconds) and reloads it when it changed, so a key revoked
    by the command line fails on the very next request. Writes take a lock file (the CLI and the
    server may write at once), re-read the file, then replace it atomically (tmp, fsync, rename).
    Auth is required once the file has held any key, revoked ones included: revoking every key must
    not open the server. A file that becomes unreadable while serving fails closed (no key is valid).
    Used from many waitress threads: `_lock` guards the cached keys.
    """

    def __init__(self, path: Path, now: Callable[[], datetime] = utc_now) -> None:
        """Loads the file now; raises KeyFileError if it exists but is not a keys file."""
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._keys: tuple[ApiKey, ...] = ()
        self._seen: tuple[int, int, int] | None = None
        self._required = False
        with self._lock:
            self._refresh(strict=True)

    @property
    def required(self) -> bool:
        """True once any key exists: every route but the public ones then needs one."""
        with self._lock:
            self._refresh()
            return self._required

    def authenticate(self, key: str) -> ApiKey | None:
        """The live (not revoked) key matching `key`, or None. Compares every stored hash in
        constant time, so the answer's timing does not tell how close a guess was."""
        digest = hash_key(key)
        with self._lock:
            self._refresh()
            keys = self._keys
        found = None
        for candidate in keys:
            if hmac.compare_digest(digest, candidate.sha256) and candidate.revoked_at is None:
                found = candidate
        return found

    def list(self) -> list[ApiKey]:
        with self._lock:
            self._refresh()
            return list(self._keys)

    def create(self, name: str, scopes: tuple[str, ...]) -> tuple[ApiKey, str]:
        """Store a new key; returns it with the clear key, which is never stored nor shown again."""
        clear = new_key()
        key = ApiKey(
            id=secrets.token_hex(8),
            name=check_name(name),
            scopes=check_scopes(list(scopes)),
            created_at=timestamp(self._now()),
            sha256=hash_key(clear),
        )
        with self._writing() as keys:
            keys.append(key)
        return key, clear

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept in the file, so the list shows it). Raises KeyNotFound."""
        if not self.path.exists():
            raise KeyNotFound(key_id)  # nothing to revoke: create neither the file nor its lock
        with self._writing() as keys:
            for index, key in enumerate(keys):
                if key.id == key_id:
                    if key.revoked_at is None:
                        keys[index] = dataclasses.replace(key, revoked_at=timestamp(self._now()))
                    return keys[index]
            raise KeyNotFound(key_id)  # inside the block, so nothing is written

    # --- inside ----------------------------------------------------------------------------------

    def _refresh(self, strict: bool = False) -> None:
        """Reload the file if it changed since the last look (caller holds _lock). Inode and size
        are compared too: a replace within one mtime tick still gives a new inode."""
        try:
            stat = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            # No file: no key is valid, and auth stays required if a key was ever seen (sticky).
            self._keys, self._seen = (), None
            return
        except OSError as exc:
            self._fail_closed(f"cannot stat {self.path}: {exc}", strict)
            return
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen == self._seen:
            return
        try:
            self._keys = _parse(osdeps.read_bytes(self.path), self.path)
        except (OSError, KeyFileError) as exc:
            self._fail_closed(str(exc), strict)
            return
        self._seen = seen
        self._required = self._required or bool(self._keys)

    def _fail_closed(self, reason: str, strict: bool) -> None:
        if strict:
            raise KeyFileError(reason)
        log.error("keys file unusable, refusing every key until it is fixed: %s", reason)
        self._keys, self._seen, self._required = (), None, True

    @contextlib.contextmanager
    def _writing(self) -> Iterator[list[ApiKey]]:
        """Lock the file against other writers, yield its keys fresh from disk, write them back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = _acquire(self.path.with_name(self.path.name + ".lock"))
        try:
            for stale in self.path.parent.glob(f"{self.path.name}.*.tmp"):  # a crashed write's; we hold the lock
                stale.unlink(missing_ok=True)
            keys = list(_parse(osdeps.read_bytes(self.path), self.path)) if self.path.exists() else []
            yield keys
            _write(self.path, keys)
        finally:
            lock.close()
        with self._lock:
            self._seen = None  # reload on next use, whatever the clock's resolution
            self._refresh()


def _acquire(path: Path) -> Any:
    """The keys file's write lock; another writer holds it only for one short write, so wait for it."""
    held = lambda exc: isinstance(exc, OSError)  # noqa: E731
    return backoff.retry(lambda: osdeps.lock_exclusively(path), held, _LOCK_WAIT_S, first_s=0.01, max_s=0.01)


def _parse(data: bytes, path: Path) -> tuple[ApiKey, ...]:
    try:
        document = json.loads(data)
        keys = tuple(ApiKey(**{**entry, "scopes": tuple(entry["scopes"])}) for entry in document["keys"])
    except (ValueError, TypeError, KeyError) as exc:
        raise KeyFileError(f"{path} is not a procq keys file ({exc})") from exc
    return keys


def _write(path: Path, keys: list[ApiKey]) -> None:
    document = {"version": 1, "keys": [dataclasses.asdict(key) for key in keys]}
    data = json.dumps(document, indent=1).encode("utf-8")
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with osdeps.create_private(tmp) as handle:  # only the server's user may read the hashes
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        osdeps.replace_file(tmp, path)
        osdeps.fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def lockout_risk(store: KeyStore, scopes: tuple[str, ...]) -> str | None:
    """Why creating this key would lock everyone out, or None. The first live key turns keys on; one
    without admin would leave nobody able to manage keys (nor, often, to submit), and undoing that
    needs a shell on the server."""
    if "admin" in scopes or any(key.revoked_at is None for key in store.list()):
        return None
    return (
        f"the first key turns keys on, and one with only {', '.join(scopes)} would leave nobody able to "
        "manage keys; create an admin key first (scope admin), then keys with fewer scopes"
    )


def keys_path(jobs_dir: Path, keys_file: Path | None) -> Path:
    """The keys file the server and `run.py keys` share: --keys-file, else <jobs-dir>/.keys.json."""
    return (keys_file or jobs_dir / ".keys.json").resolve()
