"""Secrets every kind shares: where a secret comes from, reading it, and keeping it out of sight.

A **secret reference** in a config is ``{file: /path}`` or ``{env: NAME}``, never the secret itself
(``parse_secret``). ``Secret`` reads it: a file is re-read when it changes (a rotated Kubernetes
Secret), checked with one ``stat`` per use; if the new file cannot be read, the last good value stays
in use and a warning says so. Surrounding whitespace (the newline ``echo`` leaves) is not part of a
secret. A secret's value is never logged nor shown in a ``repr``: only where it comes from.

Credentials written inline in a URL (``nats://user:pass@host``) are shown only through
``redact_url``, wherever a URL can appear: logs, status, errors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import SourceFailed, SourceUnavailable

_log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHAPE = "must be {file: /path/to/secret} or {env: VARIABLE_NAME}"
"""What a secret reference looks like, for problems."""


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is read from: a file (re-read when it changes) or an environment variable.

    Only the reference is kept here; the value is read when the source starts and never logged.
    """

    file: str = ""
    """A path, e.g. a mounted Kubernetes Secret key (``/etc/webhook/token``)."""
    env: str = ""
    """An environment variable of the server's container."""

    def describe(self) -> str:
        """``file /path`` or ``env NAME``: where the secret is, never what it is."""
        return f"file {self.file}" if self.file else f"env {self.env}"


def parse_secret(value: Any, field: str, problems: dict[str, str]) -> SecretRef | None:
    """The reference in ``value`` (None when absent or bad); a bad one is noted under ``field``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        problems[field] = f"{SHAPE} (the secret itself is never written in the config)"
        return None
    ((kind, where),) = value.items()
    if kind == "file" and isinstance(where, str) and where.strip():
        return SecretRef(file=where.strip())
    if kind == "env" and isinstance(where, str) and _ENV_NAME.match(where):
        return SecretRef(env=where)
    if kind in ("file", "env"):
        problems[f"{field}.{kind}"] = f"must be a {'path' if kind == 'file' else 'variable name'}"
    else:
        problems[field] = f"{SHAPE}, got a {kind!r} key"
    return None


def parse_username(value: Any, field: str, problems: dict[str, str]) -> str | SecretRef | None:
    """A user name: text as it is, or a secret reference (a ``kubernetes.io/basic-auth`` Secret holds
    both the user and the password); None when absent or bad, a bad one noted under ``field``."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    ref = parse_secret(value, field, problems) if isinstance(value, Mapping) else None
    if ref is None and field not in problems and not any(k.startswith(f"{field}.") for k in problems):
        problems[field] = "must be a user name, {file: /path} or {env: NAME}"
    return ref


class Secret:
    """One secret's current value, from its ``SecretRef``."""

    def __init__(self, ref: SecretRef, *, environ: Mapping[str, str] | None = None) -> None:
        self.ref = ref
        self._environ = os.environ if environ is None else environ
        self._value = b""
        self._stamp: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"Secret({self.ref.describe()})"

    def load(self) -> None:
        """Read the secret now: ``SourceFailed`` for a missing variable (it cannot appear without a
        restart), ``SourceUnavailable`` for an unreadable file (a mounted Secret may still be coming)."""
        if self.ref.env:
            value = self._environ.get(self.ref.env)
            if value is None or not value.strip():
                raise SourceFailed(f"the secret in environment variable {self.ref.env} is unset or empty")
            self._value = value.strip().encode()
            return
        try:
            self._read_file()
        except OSError as exc:
            raise SourceUnavailable(f"cannot read the secret file {self.ref.file}: {exc.strerror}") from exc
        if not self._value:
            raise SourceUnavailable(f"the secret file {self.ref.file} is empty")

    def value(self, logger: Logger = _log) -> bytes:
        """The current value; a changed file is re-read first."""
        if self.ref.file:
            try:
                if _stamp(self.ref.file) != self._stamp:
                    self._read_file()
            except OSError as exc:
                logger.warning(
                    "Cannot re-read the secret file %s (%s); keeping the last value.",
                    self.ref.file,
                    exc.strerror,
                )
        return self._value

    def text(self, logger: Logger = _log) -> str:
        """``value`` as text (UTF-8; bytes that are not become U+FFFD), for libraries that take ``str``."""
        return self.value(logger).decode("utf-8", "replace")

    def _read_file(self) -> None:
        stamp = _stamp(self.ref.file)
        with open(self.ref.file, "rb") as handle:
            value = handle.read().strip()
        if value:
            self._value = value
        self._stamp = stamp


def _stamp(path: str) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten: inode, modification time, size."""
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns, info.st_size


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redact_url(url: str) -> str:
    """``url`` with inline credentials hidden: ``nats://user:pass@host`` -> ``nats://user:***@host``,
    a bare token (``nats://s3cr3t@host``) -> ``nats://***@host``.

    Every URL of a list (``nats://a:1@h1,nats://b:2@h2``) is redacted. The userinfo is taken up to the
    last ``@`` before the next URL, so a password holding ``@``, ``/``, ``,`` or ``#`` is hidden whole:
    when in doubt, more is hidden, never less. Text without ``scheme://`` is returned as it is.
    """
    starts = [match.end() for match in _SCHEME.finditer(url)]
    if not starts:
        return url
    pieces = [url[: starts[0]]]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(url)
        segment = url[start:end]
        scheme = _SCHEME.search(segment)  # the next URL's scheme, kept for the next segment
        tail = segment[scheme.start() :] if scheme else ""
        pieces.append(_redact_authority(segment[: len(segment) - len(tail)]) + tail)
    return "".join(pieces)


def _redact_authority(rest: str) -> str:
    """``rest``, what follows ``scheme://``, with its userinfo hidden."""
    at = rest.rfind("@")
    if at < 0:
        return rest
    user, colon, _ = rest[:at].partition(":")
    shown = f"{user}:***" if colon and not any(c in user for c in "/?#,@") else "***"
    return shown + rest[at:]
