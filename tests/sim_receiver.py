"""An HTTPS webhook receiver for simulator tests (the API only sends webhooks to HTTPS
URLs): a werkzeug server on a throwaway certificate from ``cachelayer.testing.tls``."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cachelayer.testing.tls import generate_certificate, server_ssl_context


@dataclass
class Receiver:
    """``url`` to pass as ``webhook``; ``ca_file`` for the simulator's ``webhook_verify``;
    ``received``: (headers, raw body) of every POST, in order."""

    url: str
    ca_file: str
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)


@contextmanager
def https_receiver(answer: Callable[[int], int] = lambda n: 200) -> Iterator[Receiver]:
    """Serve ``POST /hook`` over HTTPS; ``answer(n)`` is the status of the n-th POST (1-based)."""
    certs = generate_certificate()
    receiver = Receiver("", certs.ca_file)
    lock = threading.Lock()

    def app(environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        with lock:
            receiver.received.append((dict(req.headers), req.get_data(as_text=True)))
            status = answer(len(receiver.received))
        return Response("ok" if status < 300 else "busy", status=status)(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=server_ssl_context(certs))
    receiver.url = f"https://127.0.0.1:{server.server_port}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(certs.directory, ignore_errors=True)
