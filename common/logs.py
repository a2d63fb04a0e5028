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


class Repeats(logging.Filter):
    """Lets each message of a chatty library through once per ``interval`` seconds.

    A client library that logs every failed reconnect (aiokafka logs several lines a second while a
    broker is down) would bury everything else; the source's own status and log line already say
    that the connection is down and why. A message (by logger and template) is let through when it
    was not seen within ``interval``, with how many like it were held back meanwhile.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        last, held = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) > 1000:  # templates with the text baked in: forget the oldest
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - last:.0f}s)"
        return True


def quiet_repeats(library: str, interval: float = 60.0) -> None:
    """Install one ``Repeats`` on the logger ``library`` and each of its descendants that exists
    (a logger's filters do not see its children's records); call it after importing the library."""
    names = [library, *(n for n in logging.Logger.manager.loggerDict if n.startswith(f"{library}."))]
    shared = Repeats(interval)
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Repeats) for f in logger.filters):
            logger.addFilter(shared)
