"""Logging setup for entrypoints, and the per-source logger adapter.

Only entrypoints call ``configure``. Modules log through ``logging.getLogger(__name__)``, and
per-source context travels in ``extra`` (``source``), which the JSON format emits as a field. An
event source's ``data`` is never logged: it may hold credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from common.settings import LogSettings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool) or value is None else str(value)
                )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger [source] message``: the source name, when there is one, in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        source = getattr(record, "source", None)
        text = super().format(record)
        if source:
            head, _, tail = text.partition(f" {record.name} ")
            text = f"{head} {record.name} [{source}] {tail}"
        return text


def configure(settings: LogSettings) -> None:
    """Install one stderr handler on the root logger in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)


class SourceLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that tags every record with the event source's name."""

    def __init__(self, logger: logging.Logger, source: str) -> None:
        super().__init__(logger, {"source": source})
        self.source = source
        """The event source's name."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
