"""Start the procq server. `python run.py --help` lists its settings; `procq serve` is the same command."""

from __future__ import annotations

import sys

from procq.server.main import main

if __name__ == "__main__":
    sys.exit(main())
