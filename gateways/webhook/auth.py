"""Credentials: secrets read from a file or the environment, bearer tokens, HMAC-SHA256 body signatures.

A secret's value is never logged nor shown in a ``repr``: only where it comes from. A file secret is
re-read when the file changes (a rotated Kubernetes Secret), checked with one ``stat`` per request;
if the new file cannot be read, the last good value stays in use and a warning says so. Surrounding
whitespace (the newline ``echo`` leaves) is not part of a secret. Comparisons take constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from common.errors import SourceFailed, SourceUnavailable
from gateways.webhook.config import SecretRef, Signature

_log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Verdict(enum.Enum):
    """What a credential check found."""

    OK = "ok"
    MISSING = "missing"
    """No credential given: 401 with a challenge."""
    WRONG = "wrong"
    """A credential given, but not the right one: 403."""


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


def check_bearer(authorization: str | None, token: bytes) -> Verdict:
    """``Authorization: Bearer <token>``: MISSING without one, WRONG when it is not ``token``."""
    if authorization is None:
        return Verdict.MISSING
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Verdict.MISSING
    return Verdict.OK if hmac.compare_digest(given.strip().encode(), token) else Verdict.WRONG


def sign(body: bytes, key: bytes) -> str:
    """``sha256=<hex>``: the signature a sender puts in the header (GitHub's ``X-Hub-Signature-256``)."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def check_signature(header_value: str | None, body: bytes, key: bytes) -> Verdict:
    """MISSING without a signature; WRONG when it is malformed or does not match ``body``."""
    if header_value is None or not header_value.strip():
        return Verdict.MISSING
    given = header_value.strip().lower().encode("ascii", errors="replace")
    return Verdict.OK if hmac.compare_digest(given, sign(body, key).encode()) else Verdict.WRONG


class Credentials:
    """What one route requires: a bearer token, a body signature, both, or nothing."""

    def __init__(self, bearer: SecretRef | None, signature: Signature | None) -> None:
        self.bearer = Secret(bearer) if bearer else None
        self.signature = Secret(signature.secret) if signature else None
        self.signature_header = signature.header if signature else ""

    def load(self) -> None:
        """Read every secret now, so a missing one stops the source at its start, not at a request."""
        for secret in (self.bearer, self.signature):
            if secret is not None:
                secret.load()

    def check_bearer(self, authorization: str | None, logger: Logger) -> Verdict:
        return Verdict.OK if self.bearer is None else check_bearer(authorization, self.bearer.value(logger))

    def check_signature(self, header_value: str | None, body: bytes, logger: Logger) -> Verdict:
        if self.signature is None:
            return Verdict.OK
        return check_signature(header_value, body, self.signature.value(logger))

    @property
    def signature_challenge(self) -> str:
        """The ``WWW-Authenticate`` value when the signature is missing (not a registered scheme:
        it tells a person what to send)."""
        return f'HMAC-SHA256 header="{self.signature_header}"'


BEARER_CHALLENGE = 'Bearer realm="webhook"'
