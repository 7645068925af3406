"""The socket side: the simulator's WSGI app served by cheroot
(:class:`~cachelayer.testing.httpserver.KeepAliveWSGIServer`) in background threads, with
real HTTP/1.1 keep-alive, as Replicate's API and CDN keep connections alive, and optional
TLS on a throwaway CA from :mod:`cachelayer.testing.tls`.

Requests sleep in worker threads: the ``latency`` knob (time to first byte) and
``Prefer: wait`` creates hold a worker for their whole wait, so the pool has
:data:`THREADS` of them: that many slow requests run at once (e.g. a benchmark's 64
concurrent downloads at 50 ms each all overlap); more queue until a worker is free. Idle
kept-alive connections hold no thread.
"""

from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING, Any

from cachelayer.testing.httpserver import KeepAliveWSGIServer

if TYPE_CHECKING:
    from cachelayer.testing.tls import CertificateFiles

__all__ = ["KEEP_ALIVE_TIMEOUT", "THREADS", "Listener"]

#: Worker threads per listener: requests answered at once (each waits its ``latency`` and
#: ``Prefer: wait`` hold in one). Idle keep-alive connections do not take a thread.
THREADS = 160

#: Seconds an idle kept-alive connection (and a stalled read or write) lasts before the
#: server closes it.
KEEP_ALIVE_TIMEOUT = 60

#: Seconds :meth:`Listener.close` lets busy workers finish before it cuts their connections.
SHUTDOWN_TIMEOUT = 5


class Listener:
    """``app`` served on ``host:port`` (port 0: any free port) until :meth:`close`.

    Binds in the constructor (raises :class:`OSError` when the address is taken).
    ``host_port`` is ``127.0.0.1:<port>`` (a wildcard host is reported as 127.0.0.1, IPv6
    in brackets), ``base_url`` ``http(s)://`` + that, ``certs`` the TLS files when ``https``:
    the ``certs`` given (another listener's, not deleted by this one; a certificate for 127.0.0.1
    and localhost serves any listener there) or, when ``None``, a
    fresh throwaway CA this listener deletes on :meth:`close`. Connections are kept alive
    between requests (HTTP/1.1); see the module docstring.
    """

    def __init__(
        self, app: Any, host: str, port: int, https: bool, *, certs: CertificateFiles | None = None
    ) -> None:
        self.certs: CertificateFiles | None = None
        self._owns_certs = certs is None
        server = KeepAliveWSGIServer(
            (host, port),
            app,
            threads=THREADS,
            timeout=KEEP_ALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            server_header="replicate-simulator",
            thread_name="replicate-sim",
        )
        try:
            if https:  # cryptography (the dev extra) is imported only for HTTPS
                from cheroot.ssl.builtin import BuiltinSSLAdapter

                from cachelayer.testing.tls import generate_certificate, server_ssl_context

                self.certs = generate_certificate() if certs is None else certs
                adapter = BuiltinSSLAdapter(self.certs.cert_file, self.certs.key_file)
                adapter.context = server_ssl_context(self.certs)
                server.ssl_adapter = adapter
            server.prepare()  # binds, listens and starts the workers
        except BaseException:
            server.stop()
            self._remove_certs()
            raise
        self._server = server
        self.port: int = int(server.bind_addr[1])
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.host_port = f"{url_host}:{self.port}"
        self.base_url = f"{'https' if https else 'http'}://{self.host_port}"
        self._thread = threading.Thread(target=server.serve, name=f"replicate-sim-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving: close the listening socket and the idle kept-alive connections, let
        busy requests finish for up to :data:`SHUTDOWN_TIMEOUT` seconds (then cut them), stop
        the worker threads, delete the certificate files."""
        self._server.stop()
        self._thread.join(timeout=SHUTDOWN_TIMEOUT)
        self._remove_certs()

    def _remove_certs(self) -> None:
        if self.certs is not None and self._owns_certs:
            shutil.rmtree(self.certs.directory, ignore_errors=True)
        self.certs = None
