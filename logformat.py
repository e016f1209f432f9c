"""Log output for run.py: human text or one JSON object per line (--log-format)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("job_id", "status", "event")  # set by actors/lifecycle.py on job lifecycle lines


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message"} plus job_id, status and event when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        data = {"time": moment, "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        data |= {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(level: str, style: str) -> None:
    """Log to stderr at `level`, as 'text' or 'json'."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
