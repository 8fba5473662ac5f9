"""Structured JSON logs for ``edgerec coordinator serve --log-format json``.

One JSON object per line (``time``, ``level``, ``logger``, ``message``, plus
``exception`` when there is one), the shape log collectors (Loki, Cloud Logging,
Elasticsearch) ingest without parsing rules.
"""

from __future__ import annotations

import json
import logging
import time

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def use_json_logs() -> None:
    """Switch every handler of the root logger to :class:`JsonFormatter`."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
