"""The server process itself: shutdown signals (Ctrl+C, Ctrl+Break, SIGTERM) and secrets kept out of its environment."""

from __future__ import annotations

import _thread
import json
import os
import signal
import sys
import threading
from collections.abc import Callable

from procq.actors.osdeps.common import WINDOWS, log


def install_shutdown(on_stop: Callable[[], None]) -> None:
    """Route SIGINT, SIGTERM (and SIGBREAK on Windows) to one graceful stop. Main thread only.

    The first signal calls `on_stop` and raises KeyboardInterrupt, which ends waitress's loop;
    later signals are only logged, so a second Ctrl+C does not cut the shutdown short.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_shutdown must be called from the main thread")
    stopping = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stopping.is_set():
            log.warning("signal %d received while already stopping", signum)
            return
        stopping.set()
        on_stop()
        raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handle)


def request_stop() -> None:
    """Ask the main thread to stop, as Ctrl+C would (for service wrappers)."""
    _thread.interrupt_main()


SECRETS_FD = "PROCQ_SECRETS_FD"  # how a re-executed server finds the secrets it was started with


def take_secrets(names: tuple[str, ...], windows: bool = WINDOWS) -> dict[str, str]:
    """The named secrets from the environment, which then no longer holds them: not os.environ, so
    no job inherits them, and on Linux not /proc/<pid>/environ either (any process of the same user
    can read that, and it keeps the environment the process was started with whatever os.environ
    says). So on POSIX, when one is set, this process re-executes itself (same pid, same arguments)
    without them and reads them back from a pipe. Windows has no such file: they are only removed."""
    inherited = os.environ.pop(SECRETS_FD, None)
    if inherited is not None:
        fd = int(inherited)
        with os.fdopen(fd, "rb") as pipe:
            return dict(json.loads(pipe.read().decode("utf-8")))
    found = {name: os.environ[name] for name in names if name in os.environ}
    if not found or windows:
        for name in found:
            del os.environ[name]
        return found
    read_end, write_end = os.pipe()
    os.write(write_end, json.dumps(found).encode("utf-8"))  # a few hundred bytes: within any pipe buffer
    os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {name: value for name, value in os.environ.items() if name not in found}
    env[SECRETS_FD] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # does not return
    raise AssertionError("unreachable")
