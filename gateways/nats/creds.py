"""A ``.creds`` login (a user JWT and its nkey seed, as ``nsc`` writes them), read and signed by us.

nats-py can read a ``.creds`` file itself, but its reader expects exactly its own layout: without the
seed block it fails with a bare ``TypeError``, without the JWT block it loops forever (taking the whole
server with it), and it reads the file anew at every reconnect, so a file rewritten badly while the
source runs would do that later. Here the text comes from the source's ``Secret`` (a rotated file is
re-read; if a new one cannot be read, the last good one stays), is parsed leniently (CRLF line ends,
blank lines, spaces), and the server's nonce is signed with the seed; the seed is never logged.
"""

from __future__ import annotations

import base64
import re

import nkeys

from common.logs import SourceLogger
from common.secrets import Secret

_BLOCK = re.compile(r"-{3,}\s*BEGIN ([A-Z ]+?)\s*-{3,}\s*\n\s*(\S+)\s*\n", re.MULTILINE)
JWT_BLOCK, SEED_BLOCK = "NATS USER JWT", "USER NKEY SEED"


class CredsError(ValueError):
    """The text is not a ``.creds`` file; the message names what is missing, never the content."""


def parse_creds(text: str) -> tuple[str, str]:
    """The user JWT and the nkey seed of a ``.creds`` text."""
    blocks = {name: value for name, value in _BLOCK.findall(text.replace("\r\n", "\n") + "\n")}
    missing = [f"BEGIN {name}" for name in (JWT_BLOCK, SEED_BLOCK) if name not in blocks]
    if missing:
        raise CredsError(f"not a .creds file: no {' and no '.join(missing)} line")
    seed = blocks[SEED_BLOCK]
    if not seed.startswith("SU"):
        raise CredsError("not a .creds file: its seed is not a user seed (SU...)")
    return blocks[JWT_BLOCK], seed


class CredsSigner:
    """nats-py's ``user_jwt_cb`` and ``signature_cb`` for one source's credentials."""

    def __init__(self, secret: Secret, logger: SourceLogger) -> None:
        self.secret = secret
        self.logger = logger

    def check(self) -> None:
        """Raise ``CredsError`` when the current text is not a ``.creds`` file."""
        parse_creds(self.secret.text(self.logger))

    def user_jwt(self) -> bytearray:
        jwt, _ = parse_creds(self.secret.text(self.logger))
        return bytearray(jwt.encode())

    def sign(self, nonce: str) -> bytes:
        _, seed = parse_creds(self.secret.text(self.logger))
        pair = nkeys.from_seed(bytearray(seed.encode()))
        try:
            return base64.b64encode(pair.sign(nonce.encode()))
        finally:
            pair.wipe()
