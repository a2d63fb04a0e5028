"""Credentials: bearer tokens and HMAC-SHA256 body signatures, checked against secrets.

Secrets are read by ``common.secrets.Secret`` (shared by every kind): from a file, re-read when it
changes (one ``stat`` per request), or from the environment; never logged. Comparisons take constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging

from common.secrets import Secret as Secret  # re-exported: the webhook's own name for it
from common.secrets import SecretRef
from gateways.webhook.config import Signature

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Verdict(enum.Enum):
    """What a credential check found."""

    OK = "ok"
    MISSING = "missing"
    """No credential given: 401 with a challenge."""
    WRONG = "wrong"
    """A credential given, but not the right one: 403."""


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
