"""Logging set-up for `callbridge serve`: one line per record, as text or as JSON.

The JSON form is one object per line (`{"ts", "level", "logger", "message", ...}`), for log collectors; the fields
a record carries in ``extra`` (the API's request lines: method, path, api, agent, status, duration_ms) become keys
of that object, and in text they follow the message as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["EXTRA_FIELDS", "JsonFormatter", "TextFormatter", "configure_logging"]

# The keys a record may carry in ``extra`` that the formatters print (anything else in a record's dict is
# logging's own bookkeeping).
EXTRA_FIELDS = ("method", "path", "api", "operation", "agent", "status", "duration_ms", "client")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in EXTRA_FIELDS if k in record.__dict__}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        return line + "".join(f" {k}={v}" for k, v in extras.items()) if extras else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        out.update(_extras(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logger to stderr at ``level`` in ``fmt`` ("text" or "json"), replacing handlers set before."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
