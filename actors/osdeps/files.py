"""Files that survive crashes and readers: atomic replace, short-retry reads, directory fsync, locks, safe opens."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from procq.actors.osdeps.common import WINDOWS, retry_transient


def replace_file(
    tmp: Path,
    dst: Path,
    windows: bool = WINDOWS,
    sleep: Callable[[float], None] = time.sleep,
    budget: float = 2.0,
) -> None:
    """os.replace, retried for up to `budget` seconds while Windows reports the target as in use."""
    retry_transient(lambda: os.replace(tmp, dst), windows, sleep, budget)


def read_bytes(path: str | Path, windows: bool = WINDOWS, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """Read a whole file with one short-lived handle, retrying briefly while Windows swaps it."""
    return retry_transient(lambda: _read(path), windows, sleep, budget_s=0.12)


def _read(path: str | Path) -> bytes:
    # os.open/os.read: half the cost of open().read() for the small files read by the 100,000 at start.
    # O_BINARY: without it, Windows would translate line endings.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(path: Path, windows: bool = WINDOWS) -> None:
    """Make a rename or a new entry in `path` durable. Directories cannot be opened on Windows."""
    if windows:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_exclusively(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on `path` for as long as the returned file stays open.

    Raises OSError if another process holds it: waitress sets SO_REUSEADDR, so on Windows a second
    server could bind the same port silently; the jobs directory lock is what keeps it out.
    """
    handle = open(path, "a+b")  # noqa: SIM115 - the open handle is the lock
    try:
        if WINDOWS:
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise
    return handle


_FILE_ATTRIBUTE_REPARSE_POINT = 0x400  # Windows: symlinks and junctions both carry it


def is_plain_dir(path: Path) -> bool:
    """True for a real directory at `path` itself: not a symlink, and on Windows not a junction
    (os.lstat reports some junctions as directories). Raises OSError but FileNotFoundError -> False."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    reparse = getattr(info, "st_file_attributes", 0) & _FILE_ATTRIBUTE_REPARSE_POINT
    return stat.S_ISDIR(info.st_mode) and not reparse


class NotARegularFile(PermissionError):
    """A file procq serves is a symlink, a FIFO, a device or a directory, or lies outside its root."""


def open_inside(path: Path, root: Path) -> IO[bytes]:
    """Open `path` for reading only if it is a regular file really inside `root`: no symlink on the way
    may lead out (realpath check), the last component is opened with O_NOFOLLOW where the OS has it
    (a link swapped in after the check is refused too), and O_NONBLOCK so a FIFO planted there cannot
    hang the read. Raises NotARegularFile for anything else; FileNotFoundError when it is missing."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root or os.path.islink(path):
        raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path))
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a link swapped in, a socket, a directory
            raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path)) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(13, "not a regular file inside the jobs directory", str(path))
    return open(fd, "rb")


def create_private(path: Path) -> IO[bytes]:
    """A new file (it must not exist) readable only by the server's user, opened for binary writing.
    The mode is ignored on Windows, where the directory's ACL decides; O_BINARY stops CRLF translation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return open(fd, "wb")


def open_to_others(path: Path, windows: bool = WINDOWS) -> bool:
    """True if the file's mode lets other users in (POSIX). On Windows the directory's ACL decides."""
    return not windows and bool(path.stat().st_mode & 0o077)
