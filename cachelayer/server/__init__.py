"""``cachelayer serve``: the webhook receiver and the gateway as an ASGI app (Starlette).

* :func:`create_app` builds the app (mount it in your own ASGI app, or run it);
* :func:`run` serves it with uvicorn until SIGTERM/SIGINT;
* :data:`serve_command` (in :mod:`cachelayer.server.command`) is the click command.
"""

from __future__ import annotations

from cachelayer.server.app import Service, create_app
from cachelayer.server.runner import run

__all__ = ["Service", "create_app", "run"]
