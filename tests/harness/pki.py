"""Certificates for TLS tests, made by the ``openssl`` command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl")


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A fresh self-signed P-256 certificate for localhost and 127.0.0.1, and its key."""
    assert OPENSSL is not None, "needs the openssl command"
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
