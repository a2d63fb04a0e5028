"""Operator (JWT) mode for a real nats-server, its keys made and its JWTs signed here, as ``nsc`` would.

A ``Trust`` is an operator, a system account and one account, each an nkey; ``server_config`` is the
nats-server config that trusts the operator and preloads both accounts (``resolver: MEMORY``), and
``creds`` writes a new user of the account as a ``.creds`` file's text. ``stranger_creds`` is a user
signed by an account key no server knows.

A JWT is ``header.claims.signature``, each base64url without padding; the header is
``{"typ":"JWT","alg":"ed25519-nkey"}``, the signature the issuer's ed25519 signature of
``header.claims``. The claims follow nats-io/jwt v2 (``v2/claims.go``): ``jti`` is the SHA-512/256 of
the other standard claims (``iat``, ``iss``, ``name``, ``sub``), base32 without padding, and ``nats``
holds the ``type`` (``operator``, ``account``, ``user``), ``version: 2`` and what the type has.
Limits are ``-1`` (unlimited) as ``nsc`` writes them: the server reads a missing one as 0, not as
unlimited.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED_ACCOUNT = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
"""JetStream for an account, unlimited (nats-io/jwt: no storage means JetStream is off for it)."""
UNLIMITED_USER = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class Key:
    """One nkey: its seed (``SO...``, ``SA...``, ``SU...``) and public key (``O...``, ``A...``, ``U...``)."""

    seed: str
    public: str

    @classmethod
    def new(cls, prefix: int) -> Key:
        """A fresh key of the kind ``prefix`` says (``nkeys.PREFIX_BYTE_USER`` and so on)."""
        seed = bytes(nkeys.encode_seed(os.urandom(32), prefix))
        public = bytes(nkeys.from_seed(bytearray(seed)).public_key)
        return cls(seed.decode(), public.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed.encode())).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sign_jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A v2 JWT for ``subject``, issued and signed by ``issuer``; ``nats`` without type or version."""
    standard = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    # nats-io/jwt hashes its standard claims as Go marshals them: compact, in field order, jti empty.
    jti = base64.b32encode(hashlib.new("sha512_256", _compact(standard)).digest()).rstrip(b"=").decode()
    claims = {"jti": jti, **standard, "nats": {**nats, "version": 2}}
    signed = f"{_b64(_compact(HEADER))}.{_b64(_compact(claims))}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def account_jwt(operator: Key, account: str, name: str, *, jetstream: bool) -> str:
    """Account ``account`` (its public key) with no limits, signed by ``operator``; with ``jetstream``
    it may use JetStream (the system account may not: nats-server refuses to start)."""
    limits = {**UNLIMITED_ACCOUNT, **(JETSTREAM if jetstream else {})}
    nats = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": "account"}
    return sign_jwt(operator, account, name, nats)


def user_jwt(account: Key, user: str, name: str) -> str:
    """User ``user`` (its public key) of ``account``, allowed everything, signed by the account's key."""
    return sign_jwt(account, user, name, {**UNLIMITED_USER, "type": "user"})


def creds_text(jwt: str, seed: str) -> str:
    """A ``.creds`` file's text, as ``nsc generate creds`` writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def new_user_creds(account: Key, name: str) -> str:
    """The ``.creds`` text of a new user of ``account``."""
    user = Key.new(nkeys.PREFIX_BYTE_USER)
    return creds_text(user_jwt(account, user.public, name), user.seed)


def stranger_creds(name: str = "stranger") -> str:
    """The ``.creds`` text of a user whose account (a fresh key) no server has been told of."""
    return new_user_creds(Key.new(nkeys.PREFIX_BYTE_ACCOUNT), name)


@dataclass(frozen=True)
class Trust:
    """An operator, its system account and one account for tests, with fresh keys."""

    operator: Key = field(default_factory=lambda: Key.new(nkeys.PREFIX_BYTE_OPERATOR))
    system: Key = field(default_factory=lambda: Key.new(nkeys.PREFIX_BYTE_ACCOUNT))
    account: Key = field(default_factory=lambda: Key.new(nkeys.PREFIX_BYTE_ACCOUNT))

    def operator_jwt(self) -> str:
        """The self-signed operator, naming its system account."""
        nats = {"system_account": self.system.public, "type": "operator"}
        return sign_jwt(self.operator, self.operator.public, "tests", nats)

    def server_config(self) -> str:
        """A nats-server config that trusts the operator and knows the system account and the account."""
        system = account_jwt(self.operator, self.system.public, "SYS", jetstream=False)
        account = account_jwt(self.operator, self.account.public, "APP", jetstream=True)
        preload = f'  {self.system.public}: "{system}"\n  {self.account.public}: "{account}"\n'
        return (
            f'operator: "{self.operator_jwt()}"\n'
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{preload}}}\n"
        )

    def creds(self, name: str) -> str:
        """The ``.creds`` text of a new user of the account."""
        return new_user_creds(self.account, name)
