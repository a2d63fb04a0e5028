"""TLS for a port, reloaded when the certificate or key file changes (cert-manager renewals, rotated Secrets).

The server's ``SSLContext`` carries a callback that runs at the start of every handshake (OpenSSL's
ClientHello callback, which Python exposes as ``sni_callback``; it runs with or without SNI). It
``stat``s both files; when either changed it loads them into a fresh context and hands the connection
to it, so every new connection gets the files' current certificate. A pair that does not load (one
file written, the other not yet) keeps the previous certificate in service, with one warning per change.
"""

from __future__ import annotations

import logging
import os
import ssl

from common.errors import SourceUnavailable
from gateways.webhook.config import TlsFiles

_log = logging.getLogger(__name__)
Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


def _stamp(files: TlsFiles) -> Stamp:
    cert, key = os.stat(files.cert), os.stat(files.key)
    return (cert.st_ino, cert.st_mtime_ns, cert.st_size), (key.st_ino, key.st_mtime_ns, key.st_size)


def _context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    return context


class ReloadingTls:
    """The server-side TLS of one port; ``context`` goes to the listening socket."""

    def __init__(
        self, files: TlsFiles, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _log
    ):
        self.files = files
        self._log = logger
        try:
            self._stamp = _stamp(files)
            self.context = _context(files)
        except (OSError, ssl.SSLError) as exc:
            raise SourceUnavailable(
                f"cannot load the TLS certificate {files.cert} and key {files.key}: {exc}"
            ) from exc
        self.context.sni_callback = self._on_hello
        self._current = self.context
        self._failed: object = None
        """The stamp (or stat error) last warned about, so a bad pair is reported once, not per handshake."""

    def _on_hello(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        try:
            self._refresh()
            if connection.context is not self._current:
                connection.context = self._current
        except (OSError, ValueError, TypeError):  # raising would fail the handshake: keep the last good one
            _log.exception("Checking the TLS files for changes failed.")

    def _refresh(self) -> None:
        try:
            stamp = _stamp(self.files)
        except OSError as exc:
            self._warn_once(("stat", exc.strerror), f"cannot stat the TLS files: {exc.strerror}")
            return
        if stamp == self._stamp or stamp == self._failed:
            return
        try:
            fresh = _context(self.files)
        except (OSError, ssl.SSLError) as exc:
            self._warn_once(stamp, str(exc))
            return
        self._current, self._stamp, self._failed = fresh, stamp, None
        self._log.info("Reloaded the TLS certificate %s and key %s.", self.files.cert, self.files.key)

    def _warn_once(self, failure: object, why: str) -> None:
        if failure != self._failed:
            self._log.warning(
                "The TLS files %s and %s do not load (%s); still serving the previous certificate.",
                self.files.cert,
                self.files.key,
                why,
            )
        self._failed = failure
