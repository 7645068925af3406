"""Running the app under uvicorn: ``cachelayer serve`` and :func:`run`."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cachelayer.server.app import create_app

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer

log = logging.getLogger("cachelayer.server")

__all__ = ["run"]


def _log_to_stderr(level: str) -> None:
    logger = logging.getLogger("cachelayer")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cachelayer: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from cachelayer.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM/SIGINT (uvicorn
        re-raises the signal afterwards, which makes the exit status -15/130)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    log.info("stopped by signal %s", ", ".join(str(s) for s in captured))
                    captured.clear()

    return Server


def run(
    layer: CacheLayer | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int | None = None,
    grace: float = 10.0,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve :func:`~cachelayer.server.create_app` with uvicorn until SIGTERM or SIGINT.

    ``layer``: default ``CacheLayer()`` from the environment. ``port`` 0 picks a free port;
    the address actually bound is logged as ``cachelayer serve listening on http://...``.
    ``workers``: copy threads (default the ``concurrency`` setting; 0 for none).
    ``grace``: seconds shutdown waits for requests and files in flight; files still in
    flight after it are released to the queue. ``access_log``: one line per request on
    stdout (uvicorn's format). The catalog is opened and the store checked before the socket
    is bound, so bad settings raise the typed errors of :class:`~cachelayer.CacheLayer`
    (:class:`~cachelayer.errors.ConfigError` also when the address cannot be bound).
    """
    import uvicorn

    _log_to_stderr(log_level)
    app = create_app(layer, workers=workers, grace=grace)
    service = app.state.cachelayer
    service.warm()
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=max(1, int(grace)),
    )
    server = _server_class()(config)
    log.warning(
        "cachelayer serve listening on http://%s:%d (url mode %s, %d copy worker(s))",
        shown,
        bound_port,
        service.layer.settings.url_mode,
        service.workers,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        service.layer.close()
