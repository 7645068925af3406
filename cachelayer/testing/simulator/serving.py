"""The socket side: a threaded werkzeug server (HTTP/1.1 keep-alive, optional TLS on a
throwaway CA from :mod:`cachelayer.testing.tls`) running a WSGI app in a background thread."""

from __future__ import annotations

import shutil
import ssl
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from cachelayer.testing.tls import CertificateFiles, generate_certificate, server_ssl_context

__all__ = ["Listener"]


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line, with a socket timeout,
    speaking HTTP/1.1 so clients keep connections alive as they do with Replicate's API
    and CDN (werkzeug's default HTTP/1.0 closes every connection)."""

    timeout = 60
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Listener:
    """``app`` served on ``host:port`` (port 0: any free port) until :meth:`close`.

    Binds in the constructor (raises :class:`OSError` when the address is taken).
    ``host_port`` is ``127.0.0.1:<port>`` (a wildcard host is reported as 127.0.0.1, IPv6
    in brackets), ``base_url`` ``http(s)://`` + that, ``certs`` the TLS files when ``https``.
    """

    def __init__(self, app: Any, host: str, port: int, https: bool) -> None:
        self.certs: CertificateFiles | None = None
        ctx: ssl.SSLContext | None = None
        if https:
            self.certs = generate_certificate()
            ctx = server_ssl_context(self.certs)
        try:
            server: BaseWSGIServer = make_server(
                host, port, app, threaded=True, request_handler=_QuietHandler
            )
        except BaseException:
            self._remove_certs()
            raise
        if ctx is not None:
            # Handshake lazily in the per-connection thread, not in the accept loop.
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            server.ssl_context = ctx
        self._server = server
        self.port: int = server.server_port
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.host_port = f"{url_host}:{self.port}"
        self.base_url = f"{'https' if https else 'http'}://{self.host_port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"replicate-sim-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, close the socket, delete the certificate files."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._remove_certs()

    def _remove_certs(self) -> None:
        if self.certs is not None:
            shutil.rmtree(self.certs.directory, ignore_errors=True)
            self.certs = None
