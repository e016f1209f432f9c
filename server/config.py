"""Where run.py's settings come from: flags, then PROCQ_* variables, then a TOML file, then defaults."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from procq.actors.errors import ConfigError

__all__ = ["ConfigError", "ConfigSource"]


class ConfigSource:
    """Default values for run.py's flags: `source("PROCQ_PORT", "8080")` gives the variable if it is
    set, else the TOML file's `port` key (dashes or underscores), else the built-in default. argparse
    then lets a flag override it, which makes the order flags > PROCQ_* > TOML > defaults.
    Values are handed over as text, so argparse checks and converts them exactly like flags."""

    def __init__(self, argv: Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config", type=Path, default=environ.get("PROCQ_CONFIG"))
        self.path: Path | None = pre.parse_known_args(argv)[0].config
        self.values = _load(Path(self.path)) if self.path else {}
        self.origins: dict[str, str] = {}

    def __call__(self, name: str, default: str) -> str:
        key = name.removeprefix("PROCQ_").lower()
        if name in self._environ:
            self.origins[key] = f"{name}={self._environ[name]}"
            return self._environ[name]
        if key in self.values:
            self.origins[key] = f"{self.path}: {key} = {_toml(self.values[key])}"
            return _text(self.values[key])
        return default

    def origin(self, dest: str) -> str | None:
        """Where the value of a setting came from, as a user would write it (`PROCQ_PORT=abc`, or
        `procq.toml: port = "abc"`), when it came from a variable or the file; None otherwise."""
        return self.origins.get(dest)

    def unknown_keys(self, parser: argparse.ArgumentParser) -> list[str]:
        known = {action.dest for action in parser._actions}
        return sorted(key for key in self.values if key not in known or key in ("help", "config"))


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    values = {key.replace("-", "_"): value for key, value in data.items()}
    nested = [key for key, value in values.items() if isinstance(value, dict | list)]
    if nested:
        raise ConfigError(f"the config file {path} must hold plain key = value settings; not allowed: {nested}")
    return values


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
