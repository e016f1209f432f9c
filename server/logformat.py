"""Log output for run.py: human text or one JSON object per line (--log-format)."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_GATHER_S = 0.02  # how long the log writer lets lines gather before writing them
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


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT with the date and time formatted once per second, not once per line (the
    lifecycle lines of a busy server are many per second)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class _Writer:
    """The one thread that formats and writes log records: it takes every record queued meanwhile
    and writes them with one write and one flush (not one of each per line)."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None], formatter: logging.Formatter) -> None:
        self._records = records
        self._formatter = formatter
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = sys.stderr
        while True:
            batch = [self._records.get()]
            time.sleep(_GATHER_S)  # let a burst of lines gather: one wake-up and one write for all of them
            while len(batch) < 10_000:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for record in batch:
                if record is None:
                    continue
                try:
                    lines.append(self._formatter.format(record) + "\n")
                except Exception:  # a bad record must not end the logging of the others
                    lines.append(f"(unformattable log record {record.msg!r})\n")
            try:
                stream.write("".join(lines))
                stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed: nowhere to log to
            if None in batch:
                return

    def stop(self) -> None:
        self._records.put(None)
        self._thread.join(timeout=5)


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
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _Writer(records, JsonFormatter() if style == "json" else TextFormatter())
    atexit.register(writer.stop)
    logging.basicConfig(level=level, handlers=[_HandOff(records)], force=True)
