"""A Kafka-protocol proxy in front of Tansu that terminates TLS and performs SASL itself.

Tansu cannot serve TLS/SASL (``brokers_tansu``: no TLS at all, no PLAIN, no way to provision a SCRAM
user): this proxy terminates them and forwards plaintext. ``proxied_tansu`` starts both: the proxy
listens on a free port first, then Tansu starts with ``--advertised-listener-url`` naming the proxy's
port (``ProxiedTansu``), so a client that bootstraps at the proxy is sent back to it by ``Metadata``
and every connection it makes goes through the proxy.

On each connection the proxy

- terminates TLS when given a server context (``server_context``: a certificate signed by the test
  CA of ``make_pki``, optionally requiring a client certificate signed by it too);
- with ``users``, performs SASL itself, before anything reaches Tansu but ``ApiVersions``:
  ``SaslHandshake`` (api key 17, v0 and v1) answers with the mechanisms it serves; the exchange then
  runs over ``SaslAuthenticate`` (api key 36, v0 and v1) after a v1 handshake, or as bare
  length-prefixed tokens after a v0 one, as Kafka does. PLAIN is checked here; SCRAM-SHA-256 and
  SCRAM-SHA-512 (RFC 5802/7677) are the server side of the ``scramp`` package. A wrong user or
  password gets error 58 (SASL_AUTHENTICATION_FAILED) with Kafka's own message, and the connection is
  closed; so is one that sends any other request before it has logged in (Kafka's rule);
- forwards every other frame to Tansu and its replies back, byte for byte, except the ``ApiVersions``
  reply when it performs SASL: Tansu's already lists 17 (v0-1) and 36 (v0-2); the proxy rewrites the
  two entries to the versions it answers (v0-1 each), so that no client picks the flexible
  ``SaslAuthenticate`` v2 that it does not parse. (Only replies v0-v2 are rewritten; aiokafka asks v0.)

``KafkaProxy.logins`` and ``refusals`` record what it decided, for tests to check that a login
really went through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import shutil
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scramp  # type: ignore[import-untyped, unused-ignore]

from tests.harness.brokers_base import require, running
from tests.harness.brokers_tansu import MISSING, Tansu, tansu_binary
from tests.harness.brokers_wire import HOST, WireError, kafka_wire

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_VERSIONS = {SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 1)}
"""The versions of the two SASL requests the proxy answers (and lists in ``ApiVersions``)."""
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
SCRAM_ITERATIONS = 4096
CLOSE_TIMEOUT = 1.0
"""Seconds a connection's close (a TLS close_notify) may take before it is aborted."""
OPENSSL = shutil.which("openssl")
AuthInfos = dict[str, tuple[Any, ...]]
"""Per user, what a SCRAM server stores (salt, stored key, server key, iterations), never the password."""


class Refused(Exception):
    """A login refused; the message is what the client is told (it never holds the password)."""


@dataclass(frozen=True)
class Pki:
    """Certificates made by ``make_pki`` in ``folder``: ``<name>.crt`` and ``<name>.key`` each."""

    folder: Path

    def crt(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"


def _certificate(folder: Path, name: str, *extra: str) -> None:
    openssl = require(Path(OPENSSL) if OPENSSL else None, "no openssl to make certificates with")
    cmd = [str(openssl), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    cmd += ["-nodes", "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.crt")]
    cmd += ["-days", "1", "-subj", f"/CN={name}", *extra]
    subprocess.run(cmd, check=True, capture_output=True)


def make_pki(folder: Path) -> Pki:
    """A CA (``ca``) signing a ``server`` certificate for 127.0.0.1 and a ``client`` one, and a CA
    of its own (``other``) that signs neither (openssl, EC P-256, valid one day)."""
    _certificate(folder, "ca")
    _certificate(folder, "other")
    signed = ["-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key")]
    leaf = [*signed, "-addext", "basicConstraints=critical,CA:FALSE"]
    _certificate(folder, "server", *leaf, "-addext", "subjectAltName=IP:127.0.0.1")
    _certificate(folder, "client", *leaf)
    return Pki(folder)


def server_context(pki: Pki, *, client_certificates: bool = False) -> ssl.SSLContext:
    """The proxy's TLS: the ``server`` certificate; with ``client_certificates``, it requires one the
    CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.crt("server"), pki.key("server"))
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.crt("ca"))
    return context


def client_context(pki: Pki, *, certificate: bool = False) -> ssl.SSLContext:
    """A test client's TLS: trusting the CA, presenting the ``client`` certificate when told."""
    context = ssl.create_default_context(cafile=str(pki.crt("ca")))
    if certificate:
        context.load_cert_chain(pki.crt("client"), pki.key("client"))
    return context


class Login:
    """One SASL exchange of one connection: ``step`` answers each client token until ``done``."""

    def __init__(self, mechanism: str, users: Mapping[str, str], scram: Mapping[str, AuthInfos]) -> None:
        """``scram``: each SCRAM mechanism's stored keys per user (``scramp``'s auth info)."""
        self.mechanism = mechanism
        self.user = ""
        self.done = False
        self._users = users
        self._scram: Any = None
        if mechanism != "PLAIN":
            self._infos = scram[mechanism]
            self._scram = scramp.ScramMechanism(mechanism).make_server(self._stored)

    def _stored(self, user: str) -> tuple[Any, ...] | None:
        """What the SCRAM server knows of ``user`` (None: no such user)."""
        self.user = user
        return self._infos.get(user)

    def step(self, token: bytes) -> bytes:
        """The answer to the client's ``token``; ``Refused`` when the credentials are wrong."""
        if self._scram is None:
            return self._plain(token)
        server = self._scram
        try:
            if server.stage is None:
                server.set_client_first(token.decode())
                return str(server.get_server_first()).encode()
            server.set_client_final(token.decode())
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise Refused(
                "Authentication failed during authentication due to invalid credentials with SASL"
                f" mechanism {self.mechanism}"
            ) from exc
        self.done = True
        return str(server.get_server_final()).encode()

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise Refused("Authentication failed: Invalid SASL/PLAIN request")
        user, password = parts[1].decode(errors="replace"), parts[2]
        expected = self._users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password):
            raise Refused("Authentication failed: Invalid username or password")
        self.user, self.done = user, True
        return b""


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One Kafka frame (without its 4-byte size), or None when the peer has gone."""
    try:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, OSError):
        return None


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def reply(correlation: int, body: bytes) -> bytes:
    """A framed response with header v0 (the correlation id alone)."""
    return framed(struct.pack(">i", correlation) + body)


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _request_body(frame: bytes) -> bytes:
    """What follows a non-flexible request header (api key, version, correlation, client id)."""
    (size,) = struct.unpack_from(">h", frame, 8)
    return frame[10 + max(size, 0) :]


def with_sasl_versions(frame: bytes, version: int) -> bytes:
    """An ``ApiVersions`` response frame (v0-v2) listing ``SASL_VERSIONS``, Tansu's other entries
    and trailing fields as they were; later versions (flexible encoding) unchanged."""
    if version > 2:
        return frame
    correlation, error, count = struct.unpack_from(">ihi", frame)
    entries = {key: (low, high) for key, low, high in struct.iter_unpack(">hhh", frame[10 : 10 + 6 * count])}
    entries |= SASL_VERSIONS
    listed = b"".join(struct.pack(">hhh", key, *entries[key]) for key in sorted(entries))
    return struct.pack(">ihi", correlation, error, len(entries)) + listed + frame[10 + 6 * count :]


class KafkaProxy:
    """The proxy; ``listen`` binds a free port, ``upstream`` is the Tansu port frames go to."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        mechanisms: tuple[str, ...] = MECHANISMS,
    ) -> None:
        self.tls = tls
        self.users = dict(users) if users is not None else None
        self.mechanisms = mechanisms
        self.upstream = 0
        self.port = 0
        self.accepted = 0
        """Connections accepted (after their TLS handshake, with TLS)."""
        self.logins: list[tuple[str, str]] = []
        """``(mechanism, user)`` of each login let in."""
        self.refusals: list[str] = []
        """Why each refused connection was refused (a login, a request before one)."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()
        self._scram: dict[str, AuthInfos] = {
            name: {
                user: scramp.ScramMechanism(name).make_auth_info(password, SCRAM_ITERATIONS)
                for user, password in (users or {}).items()
            }
            for name in mechanisms
            if name.startswith("SCRAM-")
        }

    @property
    def url(self) -> str:
        """``127.0.0.1:<port>``: the bootstrap servers of the proxy's clients."""
        return f"{HOST}:{self.port}"

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every connection (aborted: each handler then ends by itself; a
        cancelled one would be logged as an error by asyncio's stream server)."""
        if self._server is not None:
            self._server.close()
        for transport in self._transports:
            transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._transports.add(writer.transport)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(HOST, self.upstream)
            self._transports.add(upstream.transport)
            if self.users is None or await self._login(reader, writer, up_reader, upstream):
                await self._pump(reader, writer, up_reader, upstream)
        except OSError:
            pass  # either side gone
        finally:
            for side in (writer, upstream):
                if side is not None:
                    await _close(side)
                    self._transports.discard(side.transport)
            self._handlers.discard(task)

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> bool:
        """Requests one at a time until the client has logged in (True) or is refused (False)."""
        assert self.users is not None
        login: Login | None = None
        while (frame := await read_frame(reader)) is not None:
            api_key, version, correlation = struct.unpack_from(">hhi", frame)
            body = _request_body(frame)
            if api_key == API_VERSIONS:
                upstream.write(framed(frame))
                await upstream.drain()
                answer = await read_frame(up_reader)
                if answer is None:
                    return False
                writer.write(framed(with_sasl_versions(answer, version)))
            elif api_key == SASL_HANDSHAKE and login is None and version <= 1:
                (size,) = struct.unpack_from(">h", body)
                mechanism = body[2 : 2 + size].decode(errors="replace")
                known = mechanism in self.mechanisms
                error = 0 if known else UNSUPPORTED_SASL_MECHANISM
                offered = struct.pack(">hi", error, len(self.mechanisms))
                writer.write(reply(correlation, offered + b"".join(_string(m) for m in self.mechanisms)))
                if known:
                    login = Login(mechanism, self.users, self._scram)
                    if version == 0:
                        await writer.drain()
                        return await self._bare_tokens(login, reader, writer)
            elif api_key == SASL_AUTHENTICATE and login is not None and version <= 1:
                (size,) = struct.unpack_from(">i", body)
                try:
                    token = login.step(body[4 : 4 + size])
                except Refused as exc:
                    self.refusals.append(str(exc))
                    writer.write(
                        reply(correlation, _authenticated(version, SASL_AUTHENTICATION_FAILED, str(exc)))
                    )
                    await writer.drain()
                    return False
                writer.write(reply(correlation, _authenticated(version, 0, None, token)))
                if login.done:
                    await writer.drain()
                    self.logins.append((login.mechanism, login.user))
                    return True
            else:
                self.refusals.append(f"request {api_key} v{version} before a login")
                return False
            await writer.drain()
        return False

    async def _bare_tokens(
        self, login: Login, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """After a v0 handshake: each frame is a bare token, each answer one too; a refusal closes."""
        while (token := await read_frame(reader)) is not None:
            try:
                answer = login.step(token)
            except Refused as exc:
                self.refusals.append(str(exc))
                return False
            writer.write(framed(answer))
            await writer.drain()
            if login.done:
                self.logins.append((login.mechanism, login.user))
                return True
        return False

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> None:
        """Frames both ways until either side closes; ``ApiVersions`` replies get ``SASL_VERSIONS``."""
        asked: dict[int, int] = {}
        """The correlation id of each ``ApiVersions`` request in flight, and its version."""

        async def requests() -> None:
            while (frame := await read_frame(reader)) is not None:
                api_key, version, correlation = struct.unpack_from(">hhi", frame)
                if api_key == API_VERSIONS and self.users is not None:
                    asked[correlation] = version
                upstream.write(framed(frame))
                await upstream.drain()

        async def replies() -> None:
            while (frame := await read_frame(up_reader)) is not None:
                (correlation,) = struct.unpack_from(">i", frame)
                if (version := asked.pop(correlation, None)) is not None:
                    frame = with_sasl_versions(frame, version)
                writer.write(framed(frame))
                await writer.drain()

        name = f"kafka proxy :{self.port}"
        pumps = {
            asyncio.create_task(requests(), name=f"{name} requests"),
            asyncio.create_task(replies(), name=f"{name} replies"),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for outcome in await asyncio.gather(*pumps, return_exceptions=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                    raise outcome


def _authenticated(version: int, error: int, message: str | None, token: bytes = b"") -> bytes:
    """A ``SaslAuthenticate`` response body (v0; v1 adds the session lifetime, 0: none)."""
    body = struct.pack(">h", error) + _string(message) + struct.pack(">i", len(token)) + token
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


class ProxiedTansu(Tansu):
    """Tansu advertising the proxy's port, so that every client connection goes through the proxy."""

    def __init__(self, binary: Path, workdir: Path, advertised: int) -> None:
        super().__init__(binary, workdir)
        self.advertised = advertised

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{HOST}:{self.advertised}"
        return command

    async def probe(self) -> None:
        """``ApiVersions`` and a ``Metadata`` answer, on Tansu's own port, advertising the proxy's."""
        async with kafka_wire(self.port) as wire:
            advertised = (await wire.metadata()).brokers
        if not any(b.port == self.advertised for b in advertised):
            raise WireError(f"Tansu on port {self.port} advertises {advertised}, not {self.advertised}")


@dataclass(frozen=True)
class Proxied:
    """A running proxy and the Tansu behind it."""

    proxy: KafkaProxy
    broker: ProxiedTansu

    @property
    def url(self) -> str:
        """The proxy's address: what the gateway's config and the test's own clients name."""
        return self.proxy.url

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        """Straight to Tansu's own port (a bare ``CreateTopics``, which follows no ``Metadata``)."""
        async with kafka_wire(self.broker.port) as wire:
            await wire.create_topic(name, partitions)


@contextlib.asynccontextmanager
async def proxied_tansu(
    *,
    tls: ssl.SSLContext | None = None,
    users: Mapping[str, str] | None = None,
    mechanisms: tuple[str, ...] = MECHANISMS,
) -> AsyncIterator[Proxied]:
    """A proxy (TLS with ``tls``, SASL with ``users``) listening, then Tansu advertising it."""
    binary = require(tansu_binary(), MISSING)
    proxy = KafkaProxy(tls=tls, users=users, mechanisms=mechanisms)
    await proxy.listen()
    try:
        async with running(lambda workdir: ProxiedTansu(binary, workdir, proxy.port)) as broker:
            proxy.upstream = broker.port
            try:
                yield Proxied(proxy, broker)
            finally:
                await proxy.close()
    finally:
        await proxy.close()
