"""The service's logs, each line carrying the id of the request it belongs to: JSON lines for
machines, or short readable lines on a terminal."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

# Dates, dataclasses and subclasses of built-in types go to `default` (str), as json wrote them.
_AS_JSON_DID = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id (and the audit
    record and duration of a GraphQL operation)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        if hasattr(record, "audit"):
            line["audit"] = record.audit
        if hasattr(record, "duration_ms"):
            line["duration_ms"] = record.duration_ms
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # orjson: json.dumps was a third of the cost of the two lines (access and audit) of
        # every request. A line it cannot write (a lone surrogate, a huge integer) or writes
        # with other than ASCII goes through json, which escapes it as it always did.
        try:
            fast = orjson.dumps(line, default=str, option=_AS_JSON_DID)
        except (orjson.JSONEncodeError, TypeError):
            fast = b"\x80"
        return fast.decode() if fast.isascii() else json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """One readable line a record, for a person at a terminal: local time, level, request id
    ('-' outside a request), then the message; a GraphQL operation's line reads
    `query ImagingStudyList OK 12 ms` (its kind, operation, outcome and duration)."""

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        head = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {request_id.get() or '-'}"
        line = f"{head} {self._message(record)}"
        if hasattr(record, "duration_ms"):
            line += f" {record.duration_ms:.0f} ms"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # (client, method, path, HTTP version, status): the request first, then who sent it
            client, method, path, _, status = args
            return f"{method} {path} {status} from {client}"
        return record.getMessage()


class WithoutQuery(logging.Filter):
    """Cuts the query string from uvicorn's access log lines: a GET query carries search
    values such as patient ids, which the logs must not hold."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, path?query, ...).
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def configure(level: int = logging.INFO, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Every logger, uvicorn's included, to `stream` (standard error): as `fmt` says
    ("json" or "text"), or for "auto" readable lines on a terminal and JSON lines elsewhere
    (a file, a pipe, a log collector)."""
    stream = stream or sys.stderr
    text = fmt == "text" or (fmt == "auto" and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, WithoutQuery) for f in access.filters):
        access.addFilter(WithoutQuery())
