"""The errors every layer shares. Retryable and fatal faults are different types.

    GatewayError                 base of everything raised on purpose
    ├── ConfigError              an event source's config is invalid; names every bad field at once
    │   └── VersionError         the event source version is not one this gateway speaks
    ├── SourceError              a running source cannot go on
    │   ├── SourceUnavailable    a fault worth retrying (broker down, connection lost)
    │   └── SourceFailed         a fault retrying will not cure until the config changes
    └── RetriesExhausted         the retry helper gave up; ``__cause__`` is the last attempt's error

Third-party exceptions are translated at the boundary with ``raise OurError(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class GatewayError(Exception):
    """Base of every error raised on purpose by the gateways."""


class ConfigError(GatewayError):
    """An event source's configuration is invalid.

    ``problems`` maps a field path (``schedule``, ``backoff.duration``, ``recurrence[2]``) to what is
    wrong with it; every bad field is reported at once. ``source`` is the event-source name (the
    ConfigMap key) when known.
    """

    def __init__(self, problems: Mapping[str, Sequence[str] | str], *, source: str = "") -> None:
        self.problems: dict[str, list[str]] = {
            field: [msgs] if isinstance(msgs, str) else list(msgs) for field, msgs in problems.items()
        }
        self.source = source
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """One line naming each bad field and its problems, e.g. ``schedule: bad cron; timezone: unknown``."""
        return "; ".join(f"{field}: {msg}" for field, msgs in self.problems.items() for msg in msgs)

    def __str__(self) -> str:
        prefix = f"event source {self.source!r} is invalid: " if self.source else ""
        return prefix + self.reason

    def for_source(self, source: str) -> ConfigError:
        """The same problems, attributed to ``source``."""
        return type(self)(self.problems, source=source)


class VersionError(ConfigError):
    """The event source version label is not one this gateway accepts."""


class SourceError(GatewayError):
    """A running event source cannot go on."""

    def __init__(self, message: str, *, source: str = "") -> None:
        self.source = source
        super().__init__(f"event source {source!r}: {message}" if source else message)


class SourceUnavailable(SourceError):
    """A fault worth retrying with backoff: the external system is down or the connection broke."""


class SourceFailed(SourceError):
    """A fault that retrying will not cure until the configuration changes."""


class RetriesExhausted(GatewayError):
    """The retry helper gave up after ``attempts`` tries; ``__cause__`` holds the last error."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        self.what = what
        self.attempts = attempts
        super().__init__(f"{what}: gave up after {attempts} attempts: {last!r}")
