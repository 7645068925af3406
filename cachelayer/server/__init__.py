"""``cachelayer serve``: the webhook receiver and the gateway as an ASGI app (Starlette).

* :func:`create_app` builds the app (mount it in your own ASGI app, or run it);
* :func:`run` serves it with uvicorn until SIGTERM/SIGINT;
* :data:`serve_command` (in :mod:`cachelayer.server.command`) is the click command.

The names are imported on first use (PEP 562): the CLI imports
:mod:`cachelayer.server.command` for every command, and Starlette, uvicorn and
prometheus_client load only when ``serve`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachelayer.lazy import lazy_getattr

if TYPE_CHECKING:
    from cachelayer.server.app import Service, create_app
    from cachelayer.server.runner import run

__all__ = ["Service", "create_app", "run"]

_EXPORTS = {
    "Service": "cachelayer.server.app",
    "create_app": "cachelayer.server.app",
    "run": "cachelayer.server.runner",
}


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
