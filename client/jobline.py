"""Lines of a batch file (`procq batch`): a JSON job body or a command line per line."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

_INDEX = re.compile(r"jobs\[(\d+)\]")


def parse(line: str) -> dict[str, Any] | None:
    """The job body a line stands for, or None for a blank or comment line. Raises ValueError."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return body
    args = shlex.split(text, comments=False, posix=True)
    return {"args": args}


def name_line(message: str, lines: Sequence[int]) -> str:
    """The server names a bad item as jobs[i] in its batch; say which line of the file that was."""

    def line_of(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"{match.group(0)} (line {lines[index]})" if index < len(lines) else match.group(0)

    return _INDEX.sub(line_of, message, count=1)
