"""Every OS-specific call procq makes: spawn flags, ending process trees, signals, atomic files, locks,
running as another user, and the keeper's spawning and reaping. One package, one module per concern.

Nothing else in procq mentions os.name, signals, process groups or file locking (tests/test_fence.py
fences it). Pure helpers take `windows` as a parameter so Linux tests can run the Windows branch.
Callers use `from procq.actors import osdeps` and `osdeps.<name>`.
"""

from __future__ import annotations

from procq.actors.osdeps.common import (
    WINDOWS,
    is_transient,
    retry_transient,
)
from procq.actors.osdeps.files import (
    NotARegularFile,
    create_private,
    fsync_dir,
    is_plain_dir,
    lock_exclusively,
    open_inside,
    open_to_others,
    read_bytes,
    replace_file,
)
from procq.actors.osdeps.keeper import (
    CREATE_BREAKAWAY_FROM_JOB,
    CREATE_SUSPENDED,
    DETACHED_PROCESS,
    RUN_MARKER,
    Reaped,
    adopted,
    become_subreaper,
    channel,
    detached_kwargs,
    group_alive,
    inherited_rss,
    marked,
    reap_any,
    reap_handles,
    run_of,
    run_spawn_kwargs,
    spawn_run,
    start_detached,
    stop_run,
)
from procq.actors.osdeps.processes import (
    CREATE_NEW_PROCESS_GROUP,
    CREATE_NO_WINDOW,
    command_refusal,
    identity,
    same_process,
    spawn_kwargs,
    stop_tree,
    wait_child,
)
from procq.actors.osdeps.server import (
    SECRETS_FD,
    install_shutdown,
    request_stop,
    take_secrets,
)
from procq.actors.osdeps.users import (
    RunAs,
    give_to,
    lookup_run_as,
    run_as_kwargs,
)

__all__ = [
    "adopted",
    "become_subreaper",
    "channel",
    "command_refusal",
    "CREATE_BREAKAWAY_FROM_JOB",
    "CREATE_NEW_PROCESS_GROUP",
    "CREATE_NO_WINDOW",
    "create_private",
    "CREATE_SUSPENDED",
    "detached_kwargs",
    "DETACHED_PROCESS",
    "fsync_dir",
    "give_to",
    "group_alive",
    "identity",
    "inherited_rss",
    "install_shutdown",
    "is_plain_dir",
    "is_transient",
    "lock_exclusively",
    "lookup_run_as",
    "marked",
    "NotARegularFile",
    "open_inside",
    "open_to_others",
    "read_bytes",
    "reap_any",
    "reap_handles",
    "Reaped",
    "replace_file",
    "request_stop",
    "retry_transient",
    "run_as_kwargs",
    "RUN_MARKER",
    "run_of",
    "run_spawn_kwargs",
    "RunAs",
    "same_process",
    "SECRETS_FD",
    "spawn_kwargs",
    "spawn_run",
    "start_detached",
    "stop_run",
    "stop_tree",
    "take_secrets",
    "wait_child",
    "WINDOWS",
]
