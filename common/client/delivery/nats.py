"""NATS delivery: core NATS (``nats://``) and JetStream (``jetstream://``), one connection per subscriber.

Core NATS publishes every message of a batch, then flushes once: the flush's PONG says the server has
them all. That is at most once towards subscribers (core NATS stores nothing); a flush that fails is
resent whole, so a connection lost between the server reading a batch and answering the flush can
repeat that batch. JetStream publishes one message at a time and awaits the stream's ack, with the
event id as ``Nats-Msg-Id`` so the stream drops a resend as a duplicate.

The client never creates streams. Publishing where no stream captures the subject is retried (an
operator can add the stream) and shows as "no JetStream stream captures subject X" in the status.
A message over the server's ``max_payload`` is refused before publishing: the server would otherwise
close the connection. nats-py reconnects forever on its own; while it is away, a send waits up to the
request timeout for it to return, then fails as retryable. Nothing is handed to nats-py while it is
disconnected, so the lane's queue is the only buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from common import tasks
from common.client.delivery.errors import PermanentDeliveryError, Progress, RetryableDeliveryError
from common.client.delivery.settings import DeliverySettings
from common.client.model import Format, Message
from common.client.subscribers import SubscriberSpec, subject_for
from common.events import header_value

_log = logging.getLogger(__name__)
MSG_ID_HEADER = "Nats-Msg-Id"
"""The header JetStream de-duplicates on."""
_FAULTS = (nats.errors.Error, OSError, TimeoutError)
_CONNECTION_FAULTS = (OSError, TimeoutError, nats.errors.StaleConnectionError)


class NatsTransport:
    """Publishes batches to core NATS or, for ``jetstream://``, to JetStream."""

    def __init__(self, spec: SubscriberSpec, settings: DeliverySettings, *, gateway: str) -> None:
        self.name = spec.scheme
        self.max_batch = settings.nats_batch
        self._spec = spec
        self._settings = settings
        self._gateway = gateway
        self._nc = Client()
        self._connecting: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._closing = False
        self.problem: str | None = None
        """Why the connection is down, as nats-py last said; None while it is up."""

    @property
    def connected(self) -> bool:
        """True while the NATS connection is up."""
        return self._nc.is_connected

    async def connect(self) -> None:
        """Start connecting in the background; each send waits up to the request timeout for it."""
        task = self._connecting
        if task is not None:
            if not task.done():
                return
            failed = task.cancelled() or task.exception() is not None
            if not failed and not self._nc.is_closed:
                return  # connected once: nats-py reconnects by itself from here
            self._nc = Client()  # a failed or closed client is not reused
        self._connecting = tasks.start(self._connect(), name=f"connect to {self._spec.display}", logger=_log)

    async def send(self, batch: Sequence[Message], progress: Progress) -> None:
        """Publish ``batch`` in order: all accepted, or a delivery error saying how many were;
        ``progress`` hears of each message the server has taken (JetStream: each ack; core: the flush)."""
        await self._ready()
        if self.name == "jetstream":
            await self._send_jetstream(batch, progress)
        else:
            await self._send_core(batch)
            progress(len(batch))

    async def close(self) -> None:
        """Stop connecting, then close the connection (pending data is flushed by nats-py)."""
        self._closing = True
        if self._connecting is not None:
            await tasks.stop(self._connecting, timeout=self._settings.request_timeout, logger=_log)
            self._connecting = None
        if not self._nc.is_closed:
            await self._nc.close()

    async def _connect(self) -> None:
        await self._nc.connect(
            self._spec.address,
            name=f"gateway {self._gateway}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._settings.nats_reconnect_wait,  # type: ignore[arg-type]
            connect_timeout=self._settings.request_timeout,  # type: ignore[arg-type]
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._up.set()
        self.problem = None
        _log.info("Connected to %s.", self._spec.display)

    async def _ready(self) -> None:
        """Wait up to the request timeout for the connection to be up: a lane sends the moment it is."""
        if self._nc.is_connected:
            return
        await self.connect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.request_timeout):
                await self._up.wait()
        if not self._nc.is_connected:
            state = "reconnecting" if self._nc.is_reconnecting else "connecting"
            raise RetryableDeliveryError(self._spec.display, f"not connected to NATS ({state})")

    async def _send_core(self, batch: Sequence[Message]) -> None:
        display = self._spec.display
        for index, message in enumerate(batch):
            headers = nats_headers(message)
            too_large = self._check_size(message, headers, accepted=index)
            if too_large is not None:
                await self._flush()
                raise too_large
            try:
                await self._nc.publish(self._subject(message), message.body, headers=headers or None)
            except (nats.errors.BadSubjectError, nats.errors.BadHeaderError) as exc:
                await self._flush()
                raise _rejected(display, message, index, exc) from exc
            except _FAULTS as exc:
                raise RetryableDeliveryError(display, f"publish failed: {_describe(exc)}") from exc
        await self._flush()

    async def _flush(self) -> None:
        """Wait for the server's PONG: everything published before it has reached the server."""
        try:
            await self._nc.flush(timeout=self._settings.request_timeout)  # type: ignore[arg-type]
        except _FAULTS as exc:
            raise RetryableDeliveryError(self._spec.display, f"flush failed: {_describe(exc)}") from exc

    async def _send_jetstream(self, batch: Sequence[Message], progress: Progress) -> None:
        js = self._nc.jetstream(timeout=self._settings.request_timeout)
        display = self._spec.display
        for index, message in enumerate(batch):
            subject = self._subject(message)
            headers = {**nats_headers(message), MSG_ID_HEADER: message.event_id}
            too_large = self._check_size(message, headers, accepted=index)
            if too_large is not None:
                raise too_large
            try:
                await js.publish(subject, message.body, headers=headers)
            except nats.js.errors.NoStreamResponseError as exc:
                raise RetryableDeliveryError(
                    display, f"no JetStream stream captures subject {subject!r}", accepted=index
                ) from exc
            except (nats.errors.BadSubjectError, nats.errors.BadHeaderError) as exc:
                raise _rejected(display, message, index, exc) from exc
            except nats.js.errors.APIError as exc:
                raise RetryableDeliveryError(
                    display, f"JetStream refused subject {subject!r}: {exc}", accepted=index
                ) from exc
            except _FAULTS as exc:
                raise RetryableDeliveryError(
                    display, f"publish failed: {_describe(exc)}", accepted=index
                ) from exc
            progress(index + 1)

    def _check_size(
        self, message: Message, headers: Mapping[str, str], *, accepted: int
    ) -> PermanentDeliveryError | None:
        size = len(message.body) + _header_size(headers)
        if size <= self._nc.max_payload:
            return None
        return PermanentDeliveryError(
            self._spec.display,
            f"event {message.event_id} is {size} bytes, over the server's max_payload of "
            f"{self._nc.max_payload}",
            reason="too_large",
            accepted=accepted,
        )

    def _subject(self, message: Message) -> str:
        return subject_for(self._spec, self._gateway, message.source)

    async def _on_error(self, exc: Exception) -> None:
        described = _describe(exc)
        if isinstance(exc, _CONNECTION_FAULTS):
            # Said once per new reason while down (nats-py retries every couple of seconds), so a
            # subscriber down at start is reported at once, not after the first event's timeout.
            if not self._nc.is_connected and described != self.problem:
                _log.warning(
                    "Cannot connect to %s: %s; retrying (events wait in the queue).",
                    self._spec.display,
                    described,
                )
            self.problem = described if not self._nc.is_connected else self.problem
            return
        _log.warning("NATS connection to %s reports: %s", self._spec.display, described)

    async def _on_disconnected(self) -> None:
        self._up.clear()
        if not self._closing:
            _log.warning("Lost the connection to %s; reconnecting.", self._spec.display)

    async def _on_reconnected(self) -> None:
        self._up.set()
        self.problem = None
        _log.info("Reconnected to %s.", self._spec.display)


def nats_headers(message: Message) -> dict[str, str]:
    """The NATS headers of ``message``, as the CloudEvents NATS binding (1.0.3, section 3) has them.

    Binary mode: every attribute as a ``ce-`` header, ``datacontenttype`` too (``ce-datacontenttype``,
    not HTTP's ``Content-Type``). Structured mode: ``Content-Type: application/cloudevents+json``,
    which tells a receiver the mode. Legacy: none, as v0.11 published bare payloads.
    """
    if message.format is Format.BINARY:
        headers = dict(message.headers)
        content_type = headers.pop("Content-Type", None)
        if content_type is not None:
            headers["ce-datacontenttype"] = header_value(content_type)
        return headers
    if message.format is Format.STRUCTURED:
        return dict(message.headers)
    return {}


def _header_size(headers: Mapping[str, str]) -> int:
    """Bytes of the NATS header block nats-py writes for ``headers``."""
    if not headers:
        return 0
    lines = sum(len(k.strip().encode()) + 2 + len(v.strip().encode()) + 2 for k, v in headers.items())
    return len(b"NATS/1.0\r\n") + lines + 2


def _describe(exc: BaseException) -> str:
    """``Type: message``: nats-py's errors have an empty repr but a readable ``str``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _rejected(display: str, message: Message, accepted: int, exc: Exception) -> PermanentDeliveryError:
    """NATS refused the message itself (a bad subject or header): retrying the same bytes cannot help."""
    return PermanentDeliveryError(
        display, f"cannot publish event {message.event_id}: {exc}", reason="rejected", accepted=accepted
    )
