"""A test-only fault hook: crash the server, or its keeper, at one named step of starting a job.

PROCQ_TEST_CRASH_AT=<step> makes the process exit at once (no cleanup, like a SIGKILL) the first
time a job reaches that step; unset (always, outside tests) it does nothing. Server steps:
"before-record", "after-record", "after-spawn"; keeper steps: "keeper-before-intent" (a spawn
request arrived, nothing written), "keeper-after-intent" (its spawn intent is durable, the process
not started), "keeper-after-spawn" (the process runs, the server was not told). A server passes the
variable on to the keeper it starts. Tests use it to show that a crash at any step of a start
leaves exactly one run and no process that no record names.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "PROCQ_TEST_CRASH_AT"
STEPS = (
    "before-record",
    "after-record",
    "after-spawn",
    "keeper-before-intent",
    "keeper-after-intent",
    "keeper-after-spawn",
)
_AT = os.environ.get(VARIABLE)


def crash_point(step: str) -> None:
    """Exit the process now if the test asked for a crash at `step`."""
    if step == _AT:
        sys.stderr.write(f"procq: crashing at {step} ({VARIABLE})\n")
        sys.stderr.flush()
        os._exit(70)
