"""Parsers of setting values that are not plain numbers: durations and webhook signing secrets."""

from __future__ import annotations

import base64
import re

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in '604800', '3600s', '30m', '12h' or '7d'. Raises ValueError naming what is allowed."""
    match = _DURATION.fullmatch(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration: use seconds (3600) or a number with s, m, h or d (7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]


def parse_secret(text: str) -> bytes:
    """The webhook signing key: "whsec_<base64>" as Standard Webhooks tools print it, else the text's
    bytes. Raises ValueError for a whsec_ secret that is not base64."""
    if text.startswith("whsec_"):
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    return text.encode("utf-8")
