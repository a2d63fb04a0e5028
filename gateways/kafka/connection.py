"""One source's Kafka consumer: one attempt to start it, the brokers' health as the source's state,
its close.

Starting (bootstrap, metadata, for a partition reader the partition check) is one attempt per call
(``open``); ``source`` retries it with ``common.retry``. Once started, aiokafka reconnects by itself,
forever; it does not say when the brokers go away, so a named probe task asks the cluster a small
question every ``PROBE_INTERVAL`` seconds (one partition's end offset) and reports each loss and each
return with ``SourceContext.report_connection``: a broker that went down shows in status within
``PROBE_INTERVAL + PROBE_TIMEOUT`` seconds. A start that fails for a reason aiokafka only logs (a
refused login, a failed TLS handshake: it raises a bare "Unable to bootstrap") is asked again with
one plain connection per broker, so the status names the real reason. aiokafka's own log lines
(several a second while a broker is down) are let through once a minute per message
(``common.logs.quiet_repeats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import aiokafka.errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.conn import create_conn

from common import logs, tasks
from common.errors import SourceFailed, SourceUnavailable
from common.kinds import SourceContext
from common.secrets import Secret
from common.tls import client_context
from gateways.kafka.config import KafkaConfig

START_TIMEOUT = 10.0
"""Seconds one attempt to start (reach a bootstrap broker, read the metadata) may take."""
CLOSE_TIMEOUT = 5.0
"""Seconds a close may take (the last commit, leaving the group)."""
PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 3.0
REQUEST_TIMEOUT_MS = 15_000
MAX_POLL_INTERVAL_MS = 600_000
"""A member that fetches nothing for this long leaves the group (aiokafka's rule). The source does not
fetch while its stream is full (a subscriber down): ten minutes of that before the partitions go to
another member, whose redelivery would be duplicates, never losses."""
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
"""What one fetch may bring per partition: the most a partition has buffered ahead of the stream."""
FAULTS = (aiokafka.errors.KafkaError, OSError, TimeoutError)
LOGIN_FAULTS = (
    aiokafka.errors.AuthenticationFailedError,
    aiokafka.errors.SaslAuthenticationFailed,
    aiokafka.errors.UnsupportedSaslMechanismError,
)
CONN_OPTIONS = (
    "client_id",
    "request_timeout_ms",
    "ssl_context",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
)
"""The consumer's options a single connection (``create_conn``) takes too."""

logs.quiet_repeats("aiokafka")


def describe(exc: BaseException) -> str:
    """``Type: message`` (aiokafka's messages often start with their type already: said once)."""
    text, name = str(exc), type(exc).__name__
    if text.startswith(f"{name}:") or (text.startswith("[Error") and name in text):
        return text
    return f"{name}: {text}" if text else name


async def stop_consumer(consumer: AIOKafkaConsumer, logger: tasks.Logger) -> None:
    """Leave the group and close the connections, waiting at most ``CLOSE_TIMEOUT``; never raises.

    The stop runs as a task of its own, so it finishes even when the caller is being cancelled (a
    source stopped mid-fetch), and whatever it ends with stays its own: aiokafka's ``stop`` awaits a
    task it has just cancelled and lets that ``CancelledError`` out."""
    stopping = tasks.start(_stop(consumer), name="closing a Kafka consumer", logger=logger)
    _stopping.add(stopping)
    stopping.add_done_callback(_stopped)
    try:
        await asyncio.wait({stopping}, timeout=CLOSE_TIMEOUT)
    except asyncio.CancelledError:  # cancelled again while closing: finish closing first, then go
        await asyncio.wait({stopping}, timeout=CLOSE_TIMEOUT)
        raise


async def _stop(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(*FAULTS):  # a fault while closing changes nothing for a stopping source
        await consumer.stop()


_stopping: set[asyncio.Task[None]] = set()
"""Stops under way (a task is only weakly held by the loop)."""


def _stopped(task: asyncio.Task[None]) -> None:
    _stopping.discard(task)
    if not task.cancelled():
        task.exception()


class Connection:
    """The consumer of one running source."""

    def __init__(self, ctx: SourceContext, config: KafkaConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.consumer: AIOKafkaConsumer | None = None
        self._probe: asyncio.Task[None] | None = None
        self._secrets = _secrets(config)

    @property
    def display(self) -> str:
        return ",".join(self.config.brokers)

    async def open(self, listener: ConsumerRebalanceListener | None = None) -> AIOKafkaConsumer:
        """One attempt to start the consumer: a group member subscribed to the topic, or the one
        partition assigned at its newest offset. ``SourceUnavailable`` (reported) when it cannot."""
        config = self.config
        try:
            for secret in self._secrets.values():
                secret.load()
            options = self._options()
            consumer = AIOKafkaConsumer(**options)
        except SourceUnavailable as exc:
            self.ctx.report_connection(False, str(exc))
            raise
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await consumer.start()
                if config.group is not None:
                    consumer.subscribe([config.topic], listener=listener)
                else:
                    await self._assign(consumer)
        except BaseException as exc:
            await stop_consumer(consumer, self.ctx.logger)
            if isinstance(exc, SourceFailed | SourceUnavailable):
                self.ctx.report_connection(False, str(exc))
                raise
            if not isinstance(exc, FAULTS):
                raise
            if isinstance(exc, aiokafka.errors.KafkaConnectionError):
                exc = await self._bootstrap_fault(options) or exc
            reason = f"cannot reach the brokers {self.display}: {describe(exc)}"
            if isinstance(exc, LOGIN_FAULTS):
                reason = f"the brokers {self.display} refused the login: {describe(exc)}"
            elif isinstance(exc, ssl.SSLError):
                reason = f"the TLS handshake with the brokers {self.display} failed: {describe(exc)}"
            self.ctx.report_connection(False, reason)
            raise SourceUnavailable(reason, source=self.ctx.name) from exc
        self.consumer = consumer
        self._probe = tasks.start(
            self._watch(consumer),
            name=f"Kafka broker probe of event source {self.ctx.name!r}",
            logger=self.ctx.logger,
        )
        return consumer

    async def _bootstrap_fault(self, options: dict[str, Any]) -> BaseException | None:
        """Why the bootstrap brokers let no connection in: aiokafka's bootstrap only logs each
        broker's fault (a refused login, a TLS failure) and raises a bare "Unable to bootstrap".
        One connection per broker, made as aiokafka makes them, finds it again."""
        found: BaseException | None = None
        for broker in self.config.brokers:
            host, _, port = broker.rpartition(":")
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    conn = await create_conn(
                        host.strip("[]"), int(port), **{k: options[k] for k in CONN_OPTIONS if k in options}
                    )
            except FAULTS as exc:
                if isinstance(exc, (*LOGIN_FAULTS, ssl.SSLError)):
                    return exc
                found = found or exc
            else:
                conn.close()
        return found

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """v0.11's reader: the configured partition alone, from the newest offset."""
        config = self.config
        assert config.partition is not None
        partitions = consumer.partitions_for_topic(config.topic)  # from the metadata read at start
        if not partitions or config.partition not in partitions:
            known = ", ".join(str(p) for p in sorted(partitions or ())) or "none"
            raise SourceUnavailable(
                f"partition {config.partition} is not available (topic {config.topic!r} has: {known})",
                source=self.ctx.name,
            )
        tp = TopicPartition(config.topic, config.partition)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)

    async def _watch(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the cluster every ``PROBE_INTERVAL``; report the answer as the state. The question is
        small: the end offset of one assigned partition (its leader answers), or, with none assigned
        yet, the topic list."""
        while True:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    assigned = sorted(consumer.assignment())
                    if assigned:
                        await consumer.end_offsets(assigned[:1])
                    else:
                        await consumer.topics()
            except FAULTS as exc:
                why = (
                    describe(exc)
                    if not isinstance(exc, TimeoutError)
                    else f"no answer within {PROBE_TIMEOUT:g}s"
                )
                self.ctx.report_connection(False, f"no broker of {self.display} answers: {why}")
            else:
                self.ctx.report_connection(True)
            await asyncio.sleep(PROBE_INTERVAL)

    async def close(self) -> None:
        """Stop the probe, leave the group and close every connection; never raises."""
        if self._probe is not None:
            await tasks.stop(self._probe, timeout=1.0, logger=self.ctx.logger, reason="source stopped")
            self._probe = None
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await stop_consumer(consumer, self.ctx.logger)

    def _options(self) -> dict[str, Any]:
        config = self.config
        options: dict[str, Any] = {
            "bootstrap_servers": list(config.brokers),
            "client_id": f"gateways-kafka-{self.ctx.name}"[:200],
            "enable_auto_commit": False,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
            "security_protocol": config.security_protocol,
        }
        if config.group is not None:
            options |= {
                "group_id": config.group.name,
                "auto_offset_reset": "earliest" if config.group.oldest else "latest",
                "session_timeout_ms": round(config.group.session_timeout * 1000),
                # A heartbeat every tenth of the session (at most 1 s); a rebalance may take a third.
                "heartbeat_interval_ms": round(min(1.0, config.group.session_timeout / 10) * 1000),
                "rebalance_timeout_ms": round(config.group.session_timeout / 3 * 1000),
                "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
            }
        if config.tls is not None:
            options["ssl_context"] = client_context(config.tls, self.ctx.name)
        if config.sasl is not None:
            logger = self.ctx.logger
            user = config.sasl.username
            options |= {
                "sasl_mechanism": config.sasl.mechanism,
                "sasl_plain_username": user
                if isinstance(user, str)
                else self._secrets["username"].text(logger),
                "sasl_plain_password": self._secrets["password"].text(logger),
            }
        return options


def _secrets(config: KafkaConfig) -> dict[str, Secret]:
    if config.sasl is None:
        return {}
    found = {"password": Secret(config.sasl.password)}
    if not isinstance(config.sasl.username, str):
        found["username"] = Secret(config.sasl.username)
    return found
