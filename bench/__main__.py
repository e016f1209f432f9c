"""`python -m bench [--quick] [--only N ...]`: every scenario against a fresh procq server, a table
on stdout, and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import cancel, latency, limit, output, scale, throughput
from bench.report import HEADER, RESULTS, Row, print_row, write_results

NOTES = [
    "Every scenario starts its own procq server (`run.py --workers 2`, fresh jobs directory, default log level)"
    " on a free loopback port; clients use keep-alive HTTP/1.1 (http.client).",
    "Clients wait for completion by polling `GET /jobs/{id}/status` (the newest job every 20 ms, then every"
    " job once); throughput ends at the latest `completed_at` the server recorded. Server CPU per job is the"
    " server's and its keeper's (not the jobs'), from the first submit until the newest job is done (the bench's"
    " reading of every job afterwards, ~0.7 ms of server CPU per GET, is not counted).",
    "Ratios: a rate against the limit (scenario 1's `true` rate, measured in this run); a time against one raw"
    " spawn (1 / limit); big output against the same work done outside procq.",
    "The machine is a 2-core VM whose speed drifts (the limit moved 1.7x between runs of one hour), so absolute"
    " numbers are noisy; the ratios come from one run.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every scenario")
    parser.add_argument("--only", type=int, nargs="*", help="scenario numbers to run (1 always runs)")
    parser.add_argument("--no-results", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = parser.parse_args(argv)
    q = args.quick
    scenarios: dict[int, Callable[[Path, float], list[Row]]] = {
        2: lambda work, lim: throughput.run(work, lim, n=300 if q else 1000),
        3: lambda work, lim: latency.run(work, lim, n=100 if q else 500),
        4: lambda work, lim: cancel.run(work, lim, n=5 if q else 20),
        5: lambda work, lim: scale.run(work, lim, total=10_000 if q else 1_000_000, queued=1_000 if q else 10_000),
        6: lambda work, lim: output.run(work, lim, mib=256 if q else 1024, pairs=2 if q else 3),
    }
    chosen = [n for n in scenarios if not args.only or n in args.only]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(" | ".join(HEADER), flush=True)
    rate, _, rows = limit.run(n=300 if q else 1000, n_python=100 if q else 300)
    for row in rows:
        print_row(row)
    failed = False
    for number in chosen:
        work = Path(tempfile.mkdtemp(prefix=f"procq-bench-{number}-"))
        began = time.perf_counter()
        try:
            got = scenarios[number](work, rate)
        except Exception as exc:  # one broken scenario must not hide the others' numbers
            traceback.print_exc()
            got = [Row(f"{number}", "ERROR", f"{type(exc).__name__}: {exc}"[:200])]
            failed = True
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for row in got:
            print_row(row)
        print(f"   ({time.perf_counter() - began:.1f} s)", flush=True)
        rows += got
    if not args.no_results:
        command = (
            "python -m bench"
            + (" --quick" if q else "")
            + (f" --only {' '.join(map(str, args.only))}" if args.only else "")
        )
        write_results(rows, command, date, NOTES)
        print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
