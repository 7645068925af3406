"""Test helpers for hostile-network tests: a connect audit and a scriptable loopback server.

* :func:`connect_audit` records every address a ``socket.connect`` is attempted to, in this
  process, through a ``sys.addaudithook`` hook (installed once: hooks cannot be removed).
* :class:`HostileServer` is a raw HTTP/1.1 server on a loopback address whose behaviour per
  request is a Python function writing bytes straight to the socket (trickle, lie about
  lengths, redirect anywhere, never answer), recording each request's path and headers.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_recorders: list[list[tuple[str, int]]] = []
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple) -> None:
    if event != "socket.connect" or not _recorders:
        return
    address = args[1]
    if isinstance(address, tuple) and len(address) >= 2:
        entry = (str(address[0]), int(address[1]))
        with _lock:
            for rec in _recorders:
                rec.append(entry)


@contextlib.contextmanager
def connect_audit() -> Iterator[list[tuple[str, int]]]:
    """Yield a list that collects ``(host, port)`` of every ``socket.connect`` attempted in
    this process while the block runs (successful or not)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    rec: list[tuple[str, int]] = []
    with _lock:
        _recorders.append(rec)
    try:
        yield rec
    finally:
        with _lock:
            _recorders.remove(rec)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[SeenRequest, socket.socket], None]


def send_response(
    sock: socket.socket,
    body: bytes = b"",
    *,
    status: str = "200 OK",
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
) -> None:
    """Write a whole response; ``content_length`` may lie."""
    hdrs = {"Content-Length": str(len(body) if content_length is None else content_length)}
    hdrs.update(headers or {})
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(head.encode("latin-1") + body)


def trickle(sock: socket.socket, total: int, piece: int, interval: float, stop: threading.Event) -> None:
    """Send a 200 with ``Content-Length: total``, then ``piece`` bytes every ``interval`` s."""
    sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
    sent = 0
    while sent < total and not stop.is_set():
        n = min(piece, total - sent)
        try:
            sock.sendall(b"x" * n)
        except OSError:
            return
        sent += n
        time.sleep(interval)


@dataclass
class HostileServer:
    """A loopback HTTP server; ``handler(request, sock)`` writes the response itself.

    ``host_port`` is ``"127.0.0.1:<port>"``; ``url(path)`` an ``http`` URL to it; ``seen`` the
    requests received. Use as a context manager."""

    handler: Handler
    host: str = "127.0.0.1"
    seen: list[SeenRequest] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> HostileServer:
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(10)
                reader = sock.makefile("rb")
                while not outer.stop.is_set():
                    try:
                        line = reader.readline(65536)
                    except OSError:
                        return
                    if not line:
                        return
                    method, _, rest = line.decode("latin-1").partition(" ")
                    path = rest.rsplit(" ", 1)[0]
                    headers: dict[str, str] = {}
                    while True:
                        h = reader.readline(65536).decode("latin-1")
                        if h in ("\r\n", "\n", ""):
                            break
                        k, _, v = h.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    req = SeenRequest(method, path, headers)
                    outer.seen.append(req)
                    try:
                        outer.handler(req, sock)
                    except OSError:
                        return

        class _Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = _Server((self.host, 0), _Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, path: str = "/out-0.png") -> str:
        return f"http://{self.host_port}{path}"


def body_server(body: bytes = b"secret loopback body") -> HostileServer:
    """A server answering every request with 200 and ``body``."""
    return HostileServer(lambda req, sock: send_response(sock, body))
