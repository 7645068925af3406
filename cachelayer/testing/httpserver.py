"""A WSGI server for the test kit's HTTP servers (the Replicate simulator, moto's S3):
cheroot (CherryPy's HTTP server) with real HTTP/1.1 keep-alive and optional TLS.

Replicate's API and CDN and S3 keep connections alive, and clients that reuse connections
(a ``requests.Session``, httpx's pool, boto3's urllib3 pool) gain from it; a test server
that closes every connection hides that gain (and adds a TCP and TLS handshake to every
request). werkzeug's development server, which both servers used before, always answers
``Connection: close``. cheroot keeps connections open between requests, parks idle ones in
a selector (they hold no thread) and answers requests from a fixed pool of worker threads:
a request that waits (the simulator's ``latency``, a held ``Prefer: wait`` create) holds a
worker for its whole wait, so size ``threads`` for the concurrent waits a test makes.

cheroot answers ``Expect: 100-continue`` with ``100 Continue`` only when the value is spelled
in lower case, but expectation values are case-insensitive (RFC 9110, section 10.1.1) and
Go's HTTP client (rclone, the AWS SDK for Go) sends ``100-Continue``: it then waited its
one-second ``ExpectContinueTimeout`` before every upload (a 50 MiB ``rclone copyto`` took
1.7 s against moto, 0.4 s before). :class:`_ExpectHeaderReader` normalises the value.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.workers.threadpool import _SHUTDOWNREQUEST as _SHUTDOWN  # type: ignore[attr-defined]
from cheroot.workers.threadpool import ThreadPool, WorkerThread

__all__ = ["KeepAliveWSGIServer", "ShortBodyGateway"]

_log = logging.getLogger(__name__)


class ShortBodyGateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway, closing the connection after a response whose body came out
    shorter than its ``Content-Length`` (the simulator's ``truncate`` and ``drop`` faults,
    or an app that failed mid-body): the client then sees the cut instead of waiting, on a
    connection kept alive, for bytes that never come. Adds ``Server: <server_header>`` when
    the app sets none."""

    def __init__(self, req: Any) -> None:
        super().__init__(req)
        self._declared: int | None = None
        self._sent = 0

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        """Note the declared ``Content-Length``; then cheroot's ``start_response``."""
        if not any(k.lower() == "server" for k, _ in headers):
            headers = [*headers, ("Server", self.req.server.server_header)]
        for key, value in headers:
            if key.lower() == "content-length":
                self._declared = int(value)
        return super().start_response(status, headers, exc_info)

    def write(self, chunk: bytes) -> None:
        """Send ``chunk`` (cheroot's ``write``) and count it."""
        super().write(chunk)
        self._sent += len(chunk)

    def respond(self) -> None:
        """Run the app and send its answer; mark the connection for closing when the body
        fell short of its ``Content-Length`` (never for ``HEAD``, which has no body)."""
        try:
            super().respond()
        finally:
            short = self._declared is not None and self._sent < self._declared
            if short and self.req.method != b"HEAD":
                self.req.close_connection = True


class _DaemonWorker(WorkerThread):
    """A worker that does not keep the interpreter alive (as werkzeug's threads did not): a
    server never stopped must not hang the process at exit."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.daemon = True


class _ThreadPool(ThreadPool):
    """cheroot's pool with daemon workers, started without its 0.1 s readiness polls, and
    a :meth:`stop` that never waits without a limit."""

    def grow(self, amount: int) -> None:
        """Start ``amount`` more workers (not above ``max``)."""
        pool: list[WorkerThread] = self._threads  # type: ignore[attr-defined]
        budget = max(self.max - len(pool), 0)
        for _ in range(min(amount, int(budget))):
            worker = _DaemonWorker(self.server)
            worker.name = f"{self.server.thread_name}-{worker.name}"
            worker.start()
            pool.append(worker)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask every worker to exit and wait up to ``timeout`` seconds in all; then cut the
        connections of workers still busy (e.g. writing to a client that stopped reading)
        and wait one more second for them. Daemon threads left after that die with the
        process."""
        pool: list[WorkerThread] = self._threads  # type: ignore[attr-defined]
        threads, pool[:] = list(pool), []
        for _ in threads:
            self._queue.put(_SHUTDOWN)  # type: ignore[attr-defined]
        deadline = time.monotonic() + (5.0 if timeout is None else timeout)
        for worker in threads:
            worker.join(max(0.0, deadline - time.monotonic()))
        busy = [w for w in threads if w.is_alive()]
        for worker in busy:
            conn = worker.conn
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.socket.shutdown(socket.SHUT_RDWR)
        for worker in busy:
            worker.join(1.0)


class _ExpectHeaderReader(cheroot_server.HeaderReader):
    """cheroot's header reader, with the ``Expect`` value compared case-insensitively
    (module docstring)."""

    def __call__(self, rfile: Any, hdict: Any = None) -> Any:
        headers = super().__call__(rfile, hdict)
        expect = headers.get(b"Expect")
        if expect is not None and expect.strip().lower() == b"100-continue":
            headers[b"Expect"] = b"100-continue"
        return headers


class _Request(cheroot_server.HTTPRequest):
    header_reader = _ExpectHeaderReader()


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request


class KeepAliveWSGIServer(wsgi.Server):
    """cheroot's WSGI server serving ``app`` on ``bind_addr`` (port 0: any free port).

    ``threads``: worker threads (requests answered at once). ``timeout``: seconds an idle
    kept-alive connection, or a stalled read or write, lasts. ``shutdown_timeout``: seconds
    :meth:`stop` lets busy requests finish before it cuts their connections.
    ``server_header``: the ``Server`` response header. ``gateway``: the WSGI gateway class
    (a :class:`ShortBodyGateway` subclass to add environ entries). Notes cheroot logs
    (clients gone, failed TLS handshakes, app errors) go to :mod:`logging`, not stderr.

    :meth:`prepare` binds, listens and starts the workers (raises :class:`OSError` when the
    address is taken); then :meth:`serve` (e.g. in a thread) until :meth:`stop`. For TLS,
    set ``ssl_adapter`` (e.g. ``cheroot.ssl.builtin.BuiltinSSLAdapter``) before
    :meth:`prepare`.
    """

    def __init__(
        self,
        bind_addr: tuple[str, int],
        app: Any,
        *,
        threads: int,
        timeout: int = 60,
        shutdown_timeout: int = 5,
        server_header: str = "cachelayer-test-server",
        gateway: type[ShortBodyGateway] = ShortBodyGateway,
        thread_name: str = "wsgi",
    ) -> None:
        self.ConnectionClass = _Connection
        super().__init__(
            bind_addr,
            app,
            numthreads=threads,
            server_name=bind_addr[0] or "127.0.0.1",
            request_queue_size=1024,
            timeout=timeout,
            shutdown_timeout=shutdown_timeout,
        )
        self.server_header = server_header
        self.thread_name = thread_name
        self.requests = _ThreadPool(self, min=threads, max=threads)
        self.gateway = gateway
        self.keep_alive_conn_limit = 4096
        # The selector loop wakes this often, to expire idle connections and to notice
        # stop(), which waits for it: cheroot's default 0.5 s would add that much to every
        # stop (and tests start and stop many servers).
        self.expiration_interval = 0.05

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """Log cheroot's note through :mod:`logging` (``cachelayer.testing.httpserver``)."""
        _log.log(level, "%s", msg, exc_info=traceback)
