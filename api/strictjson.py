"""JSON parsing that takes only what procq can store and read back.

Python's json module accepts NaN and Infinity, strings with lone surrogates (which cannot be written
as UTF-8), integers of any size and nesting until the interpreter's recursion limit. Each of those got
into a job once and then broke the files written for it. Here they are refused, naming the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # arrays and objects inside each other; procq's bodies need 3
MAX_INT_DIGITS = 18  # below 2**63: every integer fits the 64-bit fields of meta.json readers
_DECIMAL = re.compile(f"[0-9]{{1,{MAX_INT_DIGITS}}}")


class BadJSON(ValueError):
    """Raised when a body is not JSON procq accepts; the message names the field and what is wrong."""


class _Refused:
    """Stands where a refused number was, so the walk can name its field."""

    def __init__(self, why: str) -> None:
        self.why = why


def _constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a number JSON allows; send a finite number")


def _integer(text: str) -> int | _Refused:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Refused(f"the integer has {len(text.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are allowed")
    return int(text)


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"{text[:40]} is too large a number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))  # type: ignore[func-returns-value]
        data[twice] = _Refused(f"the field {twice!r} is given more than once")
    return data


def loads(body: bytes | str) -> Any:
    """The parsed body; BadJSON naming the field (e.g. `args[1]`) for anything procq would not
    store faithfully: NaN/Infinity, numbers out of range, lone surrogates, duplicate keys, deep nesting."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body  # json.loads would also guess UTF-16/32
        data = json.loads(
            text, parse_constant=_constant, parse_int=_integer, parse_float=_float, object_pairs_hook=_pairs
        )
    except UnicodeDecodeError as exc:
        raise BadJSON(f"The body must be UTF-8 ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(f"The body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise BadJSON(f"The body nests arrays and objects more than {MAX_DEPTH} levels deep.") from None
    _check(data)
    return data


def _check(data: Any) -> None:
    """Walk without recursion, so a deep body cannot exhaust the stack here either."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, _Refused):
            raise BadJSON(f"{path or 'the body'}: {value.why}.")
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise BadJSON(f"{path or 'the body'}: nested more than {MAX_DEPTH} levels deep.")
            if isinstance(value, dict):
                for name, item in value.items():
                    _check_text(name, f"{path}.{name}".lstrip(".") if name.isprintable() else path or "a field name")
                    stack.append((item, f"{path}.{name}".lstrip("."), depth + 1))
            else:
                stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadJSON(
            f"{path or 'the body'}: character {exc.start} is a lone surrogate ({text[exc.start]!a}), "
            "which is not text; send valid Unicode."
        ) from None


def parse_decimal(text: str) -> int | None:
    """A non-negative integer written in ASCII digits (at most MAX_INT_DIGITS of them), else None.
    int() alone also takes '²', '٣', '1_000' and spaces, and fails on 4,300 digits."""
    text = text.strip()
    return int(text) if _DECIMAL.fullmatch(text) else None
