"""One source's NATS connection: one attempt to open it, its ups and downs reported, its close.

The first connect is one attempt per call (``open``); ``source`` retries it with ``common.retry``, so
each failure is a numbered log line and, with the v0.11 ``backoff``, attempts can be bounded. Once
the connection is up, nats-py re-establishes it by itself, forever, every ``RECONNECT_WAIT``
seconds, and replays the subscriptions: each loss and each return is reported with
``SourceContext.report_connection`` (the client shows it in the source's status), in the library's
words, with credentials in a URL always redacted.

nats-py's error callback also reports core NATS messages it drops as a slow consumer (past a
subscription's pending limits): each is counted in ``nats_messages_dropped_total``, and logged at most
once per ``DROP_LOG_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from common.errors import SourceFailed, SourceUnavailable
from common.kinds import SourceContext
from common.secrets import Secret, redact_url
from common.tls import client_context
from gateways.nats import metrics
from gateways.nats.config import NatsConfig
from gateways.nats.creds import CredsError, CredsSigner

CONNECT_TIMEOUT = 5.0
"""Seconds one server may take to accept the connection and answer its handshake."""
RECONNECT_WAIT = 2.0
"""Seconds between nats-py's attempts to reconnect to one server (its own default)."""
PING_INTERVAL = 20.0
"""Seconds between the client's pings: with ``MAX_OUTSTANDING_PINGS`` a connection that went silent
(a broker on a host that vanished) is noticed within about a minute, not nats-py's six."""
MAX_OUTSTANDING_PINGS = 3
CLOSE_TIMEOUT = 2.0
"""Seconds a close may take to write what is pending (the last acks) before the socket goes."""
DROP_LOG_INTERVAL = 10.0
"""Seconds between two log lines about slow-consumer drops; the count is in each line."""
FAULTS = (nats.errors.Error, OSError, TimeoutError)
"""What nats-py raises when talking to the server fails."""
CONNECTION_FAULTS = (
    OSError,
    TimeoutError,
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
)
"""Errors that mean the connection itself is lost or cannot be made."""


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` when this task has been asked to stop. nats-py can lose a cancellation
    (Python 3.11's ``asyncio.wait_for`` in its fetch and ``next_msg`` swallows one that comes as its
    own timeout fires), so loops around its calls look here on every turn instead of trusting it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def describe(exc: BaseException) -> str:
    """``Type: message`` (nats-py's errors have an empty repr but a readable ``str``), redacted."""
    text = str(exc)
    return redact_url(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class Connection:
    """The NATS connection of one running source."""

    def __init__(self, ctx: SourceContext, config: NatsConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.client = Client()
        self.listeners: list[Callable[[], None]] = []
        """Called whenever the connection comes back or is lost for good (readers wake on it)."""
        self.lost = False
        """True once the connection closed without us closing it (nats-py gave up)."""
        self.problem = ""
        """What nats-py last reported, redacted; "" while all is well."""
        self._closing = False
        self._opening = False
        self._told_why = False
        self._open = False
        self._secrets = _secrets(config)
        self._dropped = metrics.DROPPED.labels(source=ctx.name, reason="slow_consumer")
        self._unlogged_drops = 0
        self._last_drop_log = -DROP_LOG_INTERVAL

    @property
    def connected(self) -> bool:
        return self.client.is_connected

    async def open(self) -> None:
        """One attempt to connect to the configured servers (each tried twice, at once); raises
        ``SourceUnavailable`` naming the last error, and reports the source disconnected with it."""
        try:
            for secret in self._secrets.values():
                secret.load()
            options = self._options()
        except SourceUnavailable as exc:  # a file not mounted yet: retried, and said in status
            self.ctx.report_connection(False, str(exc))
            raise
        self.client = Client()
        self.problem = ""
        self.lost = False
        self.listeners = []  # the readers of failed attempts are gone
        self._open, self._closing = False, False  # a new client (an attempt after a failed subscribe)
        self._opening, self._told_why = True, False
        try:
            # nats-py has no single-attempt connect: with one reconnect allowed and no wait it tries
            # each server twice, then gives up with NoServersError (its error_cb has heard why).
            # The whole attempt is bounded too: after a failed TLS handshake nats-py's second try
            # can hang past its connect timeout.
            async with asyncio.timeout(CONNECT_TIMEOUT * 2 * len(self.config.servers) + 1):
                await self.client.connect(
                    list(self.config.servers),
                    **options,
                    allow_reconnect=True,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                )
        except BaseException as exc:  # cancelled too: the half-made connection must not linger
            await self._give_up()
            if not isinstance(exc, (*FAULTS, ValueError)):
                raise
            gave_up = isinstance(exc, nats.errors.NoServersError | TimeoutError)
            why = self.problem if gave_up and self.problem else describe(exc)
            reason = f"cannot connect to {self.config.display_url}: {why}"
            self.ctx.report_connection(False, reason)
            raise SourceUnavailable(reason, source=self.ctx.name) from exc
        finally:
            self._opening = False
        self._open = True
        # From here on nats-py reconnects by itself, forever, as the connection's own options say.
        self.client.options["max_reconnect_attempts"] = -1
        self.client.options["reconnect_time_wait"] = RECONNECT_WAIT
        self.problem = ""

    async def close(self) -> None:
        """Close the connection (what is pending, the last acks, is written first); never raises."""
        self._closing = True
        if not self._open or self.client.is_closed:
            return
        with contextlib.suppress(*FAULTS):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.client.close()

    async def _give_up(self) -> None:
        """Close the client of a failed attempt; its callbacks say nothing more."""
        self._closing = True
        try:
            with contextlib.suppress(*FAULTS, AssertionError):  # AssertionError: it never got a server
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.client.close()
        finally:
            self._closing = False

    def _options(self) -> dict[str, Any]:
        auth = self.config.auth
        secrets = self._secrets
        logger = self.ctx.logger
        options: dict[str, Any] = {
            "name": f"gateways nats source {self.ctx.name}",
            "connect_timeout": CONNECT_TIMEOUT,
            "ping_interval": PING_INTERVAL,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        # Callables are read at every (re)connect, so a rotated Secret file is used from the next one.
        if "token" in secrets:
            options["token"] = lambda: secrets["token"].text(logger)
        if "password" in secrets:
            user = auth.username
            options["user"] = (lambda: secrets["username"].text(logger)) if "username" in secrets else user
            options["password"] = lambda: secrets["password"].text(logger)
        if auth.nkey is not None:
            if auth.nkey.file:
                options["nkeys_seed"] = auth.nkey.file  # nats-py reads the file at every connect
            else:
                options["nkeys_seed_str"] = secrets["nkey"].text(logger)
        if auth.credentials is not None:
            signer = CredsSigner(secrets["credentials"], logger)
            try:
                signer.check()
            except CredsError as exc:  # a file may yet be rewritten (retried); a variable cannot
                error = SourceUnavailable if auth.credentials.file else SourceFailed
                where = auth.credentials.describe()
                raise error(f"the credentials in {where} are {exc}", source=self.ctx.name) from None
            options["user_jwt_cb"] = signer.user_jwt
            options["signature_cb"] = signer.sign
        if self.config.tls is not None or any(s.startswith("tls://") for s in self.config.servers):
            options["tls"] = client_context(self.config.tls, self.ctx.name)
        return options

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self._count_drop()
            return
        if not (self._opening and self._told_why and isinstance(exc, CONNECTION_FAULTS)):
            # Within one attempt, what the server said (Authorization Violation) stays the reason, not
            # the reset that follows it.
            self.problem = describe(exc)
            self._told_why = self._opening and not isinstance(exc, CONNECTION_FAULTS)
        if isinstance(exc, CONNECTION_FAULTS):
            # The connection is going or gone: said once, by the disconnect, then as the reason changes.
            if self.client.is_reconnecting and not self._closing:
                self.ctx.report_connection(False, self.problem)
            return
        self.ctx.logger.warning("NATS reports: %s", self.problem)  # e.g. a permissions violation

    def _count_drop(self) -> None:
        self._dropped.inc()
        self._unlogged_drops += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self.ctx.logger.warning(
                "Dropped %d message(s) on %s as a slow consumer: the stream is back-pressured and core "
                "NATS cannot wait (use jetStream for messages that must not be lost).",
                self._unlogged_drops,
                self.config.subject,
            )
            self._unlogged_drops, self._last_drop_log = 0, now

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self.ctx.report_connection(
                False, self.problem or f"lost the connection to {self.config.display_url}"
            )

    async def _on_reconnected(self) -> None:
        self.problem = ""
        self.ctx.report_connection(True)
        self._tell()

    async def _on_closed(self) -> None:
        if not self._closing:
            self.lost = True
            self.ctx.report_connection(False, self.problem or "the NATS connection closed")
            self._tell()

    def _tell(self) -> None:
        for listener in self.listeners:
            listener()


def _secrets(config: NatsConfig) -> dict[str, Secret]:
    """A reader for each secret reference the config names."""
    auth = config.auth
    refs = {
        "token": auth.token,
        "username": auth.username if not isinstance(auth.username, str) else None,
        "password": auth.password,
        "nkey": auth.nkey,
        "credentials": auth.credentials,
    }
    return {name: Secret(ref) for name, ref in refs.items() if ref is not None}
