"""Log output for run.py: human text or one JSON object per line (--log-format)."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
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


class _HandOff(logging.handlers.QueueHandler):
    """Passes records to the writer thread as they are. The stock QueueHandler formats them first,
    on the caller's thread: that is the Dispatcher's, which must stay free for the next job."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def line(style: str, message: str, **fields: object) -> str:
    """One line for stdout in the chosen style: the message as it is, or the same JSON object as a log
    record's (with `fields` added), so with --log-format json every line the server writes parses."""
    if style != "json":
        return message
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = {"time": moment, "level": "INFO", "logger": "procq", "message": message, **fields}
    return json.dumps(data, ensure_ascii=False)


def configure(level: str, style: str) -> None:
    """Log to stderr at `level`, as 'text' or 'json'. Formatting and writing happen on one writer
    thread; the queue is flushed when the process exits."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(listener.stop)
    logging.basicConfig(level=level, handlers=[_HandOff(records)], force=True)
