"""`python -m procq.client ...` runs the `procq` command line, for environments without the console script."""

from __future__ import annotations

from procq.client.cli import main

main()
