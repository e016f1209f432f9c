"""`python -m procq.actors.keeper --jobs-dir DIR`: run the keeper of DIR in the foreground."""

from __future__ import annotations

import sys

from procq.actors.keeper.service import main

sys.exit(main())
