"""One source's MQTT connection: one attempt to open it (connect, subscribe), its loss, its close.

``open`` is one attempt; ``source`` retries it with ``common.retry``, at the start and after every
loss, so each failure is a numbered log line and the reason is in the source's status while the
stream stays open. Acknowledgements are manual: a QoS 1 message's PUBACK (a QoS 2 one's PUBREC,
``holding``) goes only when ``ack`` is called, and the reader calls it in the order the
messages came, as MQTT requires. Under MQTT 5 the client's window is the connection's Receive
Maximum, so the broker never has more unacknowledged messages out to it.

Two clients with one client id make the broker close the older connection each time the other
connects, forever: under MQTT 5 the broker says so (``Session taken over``); under 3.1.1 a
connection closed within seconds of being made, again and again, says the same, and the reason in
status then names the client id.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import traceback
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.errors import SourceUnavailable
from common.kinds import SourceContext
from common.secrets import Secret, redact_url
from common.tls import client_context
from gateways.mqtt.config import MqttConfig
from gateways.mqtt.holding import HoldingClient
from gateways.mqtt.paho_loop import LoopDriver

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
KEEPALIVE = 30
"""Seconds between pings when nothing else is sent: a silent broker is noticed within about 45 s."""
DEFAULT_RECEIVE_MAXIMUM = 64
"""Unacknowledged QoS 1/2 messages the broker may send when the client has no window (v0.11)."""
TAKEN_OVER = 142
"""MQTT 5's reason code ``Session taken over``: another connection with the same client id."""
QUICK_LOSS = 5.0
"""Seconds: a connection lost this soon after it was made counts towards a client-id clash."""
FAULTS = (OSError, TimeoutError, ValueError, mqtt.WebsocketConnectionError)

Deliver = Callable[[mqtt.MQTTMessage], None]


class Connection:
    """The MQTT connection of one running source; ``open`` again after a loss."""

    def __init__(self, ctx: SourceContext, config: MqttConfig, deliver: Deliver) -> None:
        self.ctx = ctx
        self.config = config
        self.deliver = deliver
        self.client: mqtt.Client | None = None
        self.lost = asyncio.Event()
        self.reason = ""
        self.listeners: list[Callable[[], None]] = []
        self.quick_losses = 0
        """Connections in a row lost within ``QUICK_LOSS`` of being made."""
        self._driver: LoopDriver | None = None
        self._connack: asyncio.Future[tuple[Any, bool]] | None = None
        self._suback: asyncio.Future[list[Any]] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._connected_at = 0.0
        self._closing = False
        self._secrets = {
            name: Secret(ref)
            for name, ref in (("username", config.username), ("password", config.password))
            if ref is not None and not isinstance(ref, str)
        }

    @property
    def v5(self) -> bool:
        return self.config.protocol == "5"

    async def open(self) -> bool:
        """One attempt: connect and subscribe; whether the broker still had the session. Raises
        ``SourceUnavailable`` (reported) when it cannot."""
        await self.close()
        self._closing = False
        self.lost = asyncio.Event()
        self.reason = ""
        loop = asyncio.get_running_loop()
        config = self.config
        step = f"connecting to {config.display_url}"
        try:
            client = self._client()
            self.client = client
            self._driver = LoopDriver(client, self.ctx.logger, self.ctx.name)
            self._connack, self._gone = loop.create_future(), loop.create_future()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.run_in_executor(None, functools.partial(self._connect, client))
                code, present = await self._connack
                if code.is_failure:
                    raise SourceUnavailable(
                        f"the broker refused the connection: {code}", source=self.ctx.name
                    )
                step = f"subscribing to {config.topic!r}"
                self._suback = loop.create_future()
                if self.v5:  # retained messages only for a new subscription, not a resumed session's
                    client.subscribe(config.topic, options=SubscribeOptions(qos=config.qos, retainHandling=1))
                else:
                    client.subscribe(config.topic, qos=config.qos)
                (granted,) = await self._suback
                if granted.is_failure:
                    raise SourceUnavailable(
                        f"the broker refused the subscription: {granted}", source=self.ctx.name
                    )
        except BaseException as exc:
            await self.close()
            if isinstance(exc, SourceUnavailable):
                reason = str(exc).removeprefix(f"event source {self.ctx.name!r}: ")
                reason = f"{step} failed: {reason}"
            elif isinstance(exc, FAULTS):
                reason = f"{step} failed: {redact_url(f'{type(exc).__name__}: {exc}')}"
            else:
                raise
            self.ctx.report_connection(False, reason)
            raise SourceUnavailable(reason, source=self.ctx.name) from exc
        self._connected_at = loop.time()
        if granted.value < config.qos:
            self.ctx.logger.warning(
                "The broker granted QoS %d of the %d asked for.", granted.value, config.qos
            )
        return bool(present)

    def _client(self) -> mqtt.Client:
        config = self.config
        client = HoldingClient(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=None if self.v5 else not config.persistent,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            transport=config.transport,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if config.transport == "websockets":
            client.ws_set_options(path=config.path or "/mqtt")
        if config.uses_tls:
            client.tls_set_context(client_context(config.tls, self.ctx.name))
        if config.username is not None:
            for secret in self._secrets.values():
                secret.load()
            logger = self.ctx.logger
            user = (
                config.username
                if isinstance(config.username, str)
                else self._secrets["username"].text(logger)
            )
            password = self._secrets["password"].text(logger) if "password" in self._secrets else None
            client.username_pw_set(user, password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect(self, client: mqtt.Client) -> None:
        """The blocking part, in a worker thread: name lookup, TCP, TLS, the CONNECT packet."""
        config = self.config
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = min(65535, self.ctx.max_unacked or DEFAULT_RECEIVE_MAXIMUM)
            if config.persistent:
                properties.SessionExpiryInterval = int(config.session_expiry)
        clean_start: Any = (not config.persistent) if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        try:
            client.connect(
                config.host, config.port, keepalive=KEEPALIVE, clean_start=clean_start, properties=properties
            )
        except BaseException as exc:
            _close_orphans(exc)
            raise

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((code, getattr(flags, "session_present", False)))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any
    ) -> None:
        if self._suback is not None and not self._suback.done():
            self._suback.set_result(list(codes))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self.lost.is_set():
            self.deliver(message)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, code: Any, properties: Any
    ) -> None:
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"the broker closed the connection: {code}"))
            return
        if self._closing or self.lost.is_set():
            return
        quick = asyncio.get_running_loop().time() - self._connected_at < QUICK_LOSS
        self.quick_losses = self.quick_losses + 1 if quick else 0
        reason = f"the broker closed the connection: {code}"
        if getattr(code, "value", None) == TAKEN_OVER or self.quick_losses >= 2:
            reason += (
                f" (another client connected with client id {self.config.client_id!r}: two clients with "
                "one id disconnect each other in a loop; give each source and replica its own)"
            )
        self.reason = reason
        self.lost.set()
        for listener in self.listeners:
            listener()

    def ack(self, mid: int, qos: int) -> None:
        """Send the PUBACK (QoS 1) or PUBREC (QoS 2) of ``mid`` now, if still connected."""
        if self.client is not None and not self.lost.is_set():
            self.client.ack(mid, qos)

    async def close(self) -> None:
        """Disconnect (the broker keeps a persistent session) and let go of the socket; never raises."""
        self._closing = True
        client, driver, gone = self.client, self._driver, self._gone
        self.client, self._driver = None, None
        try:
            if client is not None:
                connected = client.is_connected()
                client.disconnect()  # also frees a half-open socket
                if connected and gone is not None:
                    await asyncio.wait({gone}, timeout=CLOSE_TIMEOUT)
        finally:
            if driver is not None:
                driver.stop()
            sock = client.socket() if client is not None else None
            if sock is not None:  # paho closes it on reading the broker's end; nothing reads any more
                sock.close()


def _close_orphans(exc: BaseException) -> None:
    """Close the sockets a failed connect left behind: paho drops the socket of a failed TLS
    handshake without closing it, and the garbage collector would close it later, warning."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for value in frame.f_locals.values():
            if isinstance(value, socket.socket) and value.fileno() >= 0:
                value.close()
