"""`python -m client ...` runs the `procq` command line, for environments without the console script."""

from __future__ import annotations

from client.cli import main

main()
