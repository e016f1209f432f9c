"""Cluster mode: a job's output read through the node that holds its files, relayed through another
node, and (finished) from the copy kept in the database, in one run on two nodes of one PostgreSQL.
Each path is read `--reads` times (plain GETs of a `--mib` MiB log) in `--rounds` rounds that alternate
with the owner's own reads (the machine is shared and noisy); the median round, as a ratio to the
owner's median in the same phase. `python -m bench.cluster_output [--mib 4]` prints one table."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster_nodes import drop, fresh_schema, start, stop
from tests.helpers import ServerProcess

WRITE_THEN_WAIT = """
import os, sys
chunk = (b"x" * 1023 + b"\\n")
for _ in range(int(sys.argv[1]) * 1024):
    sys.stderr.buffer.write(chunk)
sys.stderr.flush()
while not os.path.exists(sys.argv[2]):
    import time; time.sleep(0.05)
"""


def timed(node: ServerProcess, job_id: str, reads: int, size: int) -> float:
    """Seconds for `reads` plain reads, after one untimed (connections and caches warm)."""
    node.get(f"/jobs/{job_id}/logs")
    began = time.perf_counter()
    for _ in range(reads):
        answer = node.get(f"/jobs/{job_id}/logs")
        assert answer.status_code == 200 and len(answer.content) == size, (answer.status_code, len(answer.content))
    return time.perf_counter() - began


def paired(
    owner: ServerProcess, other: ServerProcess, job_id: str, args: argparse.Namespace, size: int
) -> tuple[float, float]:
    """The median round of the owner's reads and of the other node's, alternated round by round."""
    mine, theirs = [], []
    for _ in range(args.rounds):
        mine.append(timed(owner, job_id, args.reads, size))
        theirs.append(timed(other, job_id, args.reads, size))
    return statistics.median(mine), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    size = args.mib << 20
    name, url = fresh_schema()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes = start(root, 2, 1, url)
        try:
            gate = root / "go"
            job = nodes[0].submit([sys.executable, "-c", WRITE_THEN_WAIT, str(args.mib), str(gate)])
            while (now := nodes[0].status(job["id"]))["status"] != "IN_PROGRESS":
                time.sleep(0.05)
            owner = nodes[0] if now["node"] == "n0" else nodes[1]
            other = nodes[1] if owner is nodes[0] else nodes[0]
            while int(owner.get(f"/jobs/{job['id']}/logs", params={"offset": size}).headers["X-Next-Offset"]) < size:
                time.sleep(0.05)
            mine, relayed = paired(owner, other, job["id"], args, size)
            gate.touch()
            while owner.status(job["id"])["status"] != "COMPLETED":
                time.sleep(0.05)
            finished_owner, kept = paired(owner, other, job["id"], args, size)
        finally:
            stop(nodes)
            drop(name)
    print(f"| {args.reads} reads of a {args.mib} MiB log (median of {args.rounds} rounds) | s | × the owner's own |")
    print("|---|---|---|")
    print(f"| running job, from the node that runs it | {mine:.2f} | 1.00 |")
    print(f"| running job, relayed through another node | {relayed:.2f} | {relayed / mine:.2f} |")
    print(f"| finished job, from the node that ran it | {finished_owner:.2f} | 1.00 |")
    print(f"| finished job, another node, from the database copy | {kept:.2f} | {kept / finished_owner:.2f} |")


if __name__ == "__main__":
    main()
