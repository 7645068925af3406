"""moto's server mode (S3 and every other moto service) served with HTTP/1.1 keep-alive::

    python -m cachelayer.testing.motoserver [-H 127.0.0.1] [-p 5000] [--threads 64]
        [--certfile chain.pem --keyfile key.pem]   # HTTPS

What ``python -m moto.server`` serves (moto's ``DomainDispatcherApplication``), on
:class:`~cachelayer.testing.httpserver.KeepAliveWSGIServer` (cheroot) instead of werkzeug's
development server, which answers every request with ``Connection: close``: boto3 then
opens a new connection per request, which S3 does not make it do. The environ gets what
moto's own request handler adds (``RAW_URI``, the original spelling of ``x-amz-meta-*``
headers with underscores). :class:`~cachelayer.testing.s3server.MotoS3Server` runs this.
Serves until SIGTERM or SIGINT, then stops and exits with status 0 at once (``os._exit``:
the interpreter's teardown of moto's modules takes seconds). Needs ``moto[server]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from cachelayer.testing.httpserver import KeepAliveWSGIServer, ShortBodyGateway

__all__ = ["MotoGateway", "main"]


class MotoGateway(ShortBodyGateway):
    """The gateway with the environ entries moto's ``MotoRequestHandler`` makes: ``RAW_URI``
    (the path as sent, before percent-decoding: moto matches S3 keys against it) and, for
    ``x-amz-meta-*`` headers whose names hold underscores, their own environ entries and
    original names (WSGI folds ``-`` and ``_`` together; S3 metadata keys keep them apart)."""

    def get_environ(self) -> Any:  # a dict (cheroot's stub says None)
        """cheroot's environ plus moto's entries."""
        from moto.core.request import (
            PRESERVED_HEADER_NAMES_ENVIRON_KEY,
            environ_key_for_header,
            should_preserve_original_header_name,
        )

        env: dict[str, Any] = super().get_environ()
        env["RAW_URI"] = env.get("REQUEST_URI", "")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.req.inheaders.items()]
        dashed = {environ_key_for_header(name) for name, _ in headers if "_" not in name}
        names: dict[str, str] = {}
        for name, value in headers:
            if not should_preserve_original_header_name(name):
                continue
            key = environ_key_for_header(name)
            if key in dashed:  # never let an underscored header stand in for a dashed one
                continue
            names.setdefault(key, name.lower())
            env[key] = value.replace("\r\n", "")
        env[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names
        return env


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve moto until SIGTERM/SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m cachelayer.testing.motoserver",
        description="moto's server mode with HTTP/1.1 keep-alive (cheroot).",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to bind (default %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=64, help="worker threads: requests answered at once (default 64)"
    )
    parser.add_argument("--certfile", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--keyfile", help="the private key of --certfile (PEM)")
    args = parser.parse_args(argv)
    # as python -m moto.server does: moto builds some URLs (e.g. presigned POSTs) from it
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as python -m moto.server sets it
    server = KeepAliveWSGIServer(
        (args.host, args.port),
        app,
        threads=args.threads,
        server_header="moto (cachelayer.testing.motoserver)",
        gateway=MotoGateway,
        thread_name="moto",
    )
    if args.certfile:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(args.certfile, args.keyfile)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.prepare()
    serving = threading.Thread(target=server.serve, name="moto-serve", daemon=True)
    serving.start()
    scheme = "https" if args.certfile else "http"
    print(f"moto serving on {scheme}://{args.host}:{server.bind_addr[1]}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    serving.join(timeout=5)
    return 0


if __name__ == "__main__":
    status = main()
    # Exit at once: the interpreter's teardown of moto's (and Flask's) modules takes seconds,
    # which every test session's stop() would wait for. Nothing is left to flush but these.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
