"""Bench: what API keys cost per request.

    python bench/auth.py [--requests 2000] [--keys 100]

Times KeyStore lookups in process, then starts run.py three times on fresh jobs directories and times
GET /jobs/{id}/status one request after another: with no key configured, with an admin key, and with a
non-admin key that owns the job (the middleware then also asks the Dispatcher for the job's owner) among
--keys other keys (each is compared in constant time). Numbers depend on the machine; they are for
comparing changes, not promises.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procq.api.keys import KeyStore  # noqa: E402


def serve(jobs_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--jobs-dir", str(jobs_dir), "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = re.search(r"http://[\d.]+:\d+", proc.stdout.readline().decode()).group(0)
    return proc, url


def measure(label: str, jobs_dir: Path, key: str | None, count: int) -> None:
    proc, url = serve(jobs_dir)
    try:
        http = requests.Session()
        if key:
            http.headers["Authorization"] = f"Bearer {key}"
        job = http.post(f"{url}/jobs", json={"args": [sys.executable, "-c", "pass"]}, timeout=10).json()
        status_url = f"{url}/jobs/{job['id']}/status"
        for _ in range(100):  # warm up
            http.get(status_url, timeout=10)
        times = []
        for _ in range(count):
            began = time.perf_counter()
            response = http.get(status_url, timeout=10)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.text
        times.sort()
        p99 = times[int(len(times) * 0.99) - 1]
        print(f"{label:<44} median {statistics.median(times):.3f} ms   p99 {p99:.3f} ms")
    finally:
        proc.terminate()
        proc.wait(30)


def in_process(keys: int) -> None:
    """KeyStore alone: a lookup (stat of the file + a constant-time compare with every key)."""
    import timeit

    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys.json")
        for n in range(keys):
            store.create(f"k{n}", ("jobs:read",))
        _, clear = store.create("me", ("admin",))
        n = 20000
        lookup = timeit.timeit(lambda: store.authenticate(clear), number=n) / n * 1e6
        required = timeit.timeit(lambda: store.required, number=n) / n * 1e6
        print(f"in process: authenticate among {keys + 1} keys {lookup:.1f} us, 'required' check {required:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    in_process(args.keys)
    with tempfile.TemporaryDirectory() as tmp:
        plain, admin_dir, owner_dir = (Path(tmp) / name for name in ("plain", "admin", "owner"))
        for path in (plain, admin_dir, owner_dir):
            path.mkdir()
        measure("no key configured", plain, None, args.requests)
        _, admin = KeyStore(admin_dir / ".keys.json").create("admin", ("admin",))
        measure("admin key", admin_dir, admin, args.requests)
        store = KeyStore(owner_dir / ".keys.json")
        for n in range(args.keys):
            store.create(f"other{n}", ("jobs:read",))
        _, owner = store.create("owner", ("jobs:submit", "jobs:read"))
        measure(f"owner key among {args.keys} keys (+ owner check)", owner_dir, owner, args.requests)


if __name__ == "__main__":
    main()
