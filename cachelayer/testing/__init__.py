"""Test helpers shipped with cachelayer: the Replicate simulator, a real moto S3 server,
pytest fixtures and the ``cachelayer demo``.

:mod:`cachelayer.testing.simulator` (a package) is a Replicate API and file-delivery
server; run it on its own with ``python -m cachelayer.testing.simulator --port 8765``.
It needs only cachelayer's runtime dependencies. :mod:`cachelayer.testing.fixtures` is
registered as a pytest plugin (``pytest11`` entry point); it imports nothing heavy at
import time. :mod:`cachelayer.testing.s3server` needs ``moto[server]``
(``pip install 'cachelayer[dev]'``); it runs moto under :mod:`cachelayer.testing.motoserver`.
Both servers use :mod:`cachelayer.testing.httpserver` (cheroot, HTTP/1.1 keep-alive).
:mod:`cachelayer.testing.demo` is what ``cachelayer demo`` runs.
"""
