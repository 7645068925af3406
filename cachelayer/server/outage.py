"""What the routes of ``cachelayer serve`` answer while the catalog or the store is down.

Every catalog call a route makes goes through the catalog's retry
(:mod:`cachelayer.catalog.retry`) under a deadline (:class:`RouteDeadline`, installed on
the app, for every request; :func:`route_deadline` for a shorter one): a PostgreSQL restart of a
few seconds is waited out, a longer outage answers ``503 Service Unavailable`` with
``Retry-After`` after at most :data:`ROUTE_RETRY_SECONDS` (plus one attempt) instead of
holding the client for the whole ``CACHELAYER_DB_RETRY_SECONDS``. :data:`EXCEPTION_HANDLERS`
(installed on the app) maps whatever still escapes a route, a typed
:class:`~cachelayer.errors.CacheLayerError` (catalog outage, store failure) or a raw
SQLAlchemy error, to the same ``503``: no route answers ``500`` or logs a
traceback for a failure of what it depends on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cachelayer.catalog.retry import first_line, retry_deadline
from cachelayer.errors import CacheLayerError

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBE_RETRY_SECONDS",
    "RETRY_AFTER_SECONDS",
    "ROUTE_RETRY_SECONDS",
    "RouteDeadline",
    "describe",
    "retry_after",
    "route_deadline",
    "unavailable",
]

log = logging.getLogger("cachelayer.server")

#: Seconds a route retries the catalog before answering 503 (a fast PostgreSQL restart,
#: about 1-3 s, is waited out; load balancers' health checks time out after 5-10 s).
ROUTE_RETRY_SECONDS = 5.0
#: Seconds ``/healthz`` and ``/metrics`` retry the catalog: a probe answers within its
#: caller's timeout (Kubernetes probes default to 1 s, Prometheus scrapes to 10 s), so it
#: says "unavailable" (``cachelayer_catalog_up 0``) rather than wait.
PROBE_RETRY_SECONDS = 1.0
#: ``Retry-After`` of a 503, in seconds (RFC 9110 section 10.2.3).
RETRY_AFTER_SECONDS = 5


def retry_after() -> dict[str, str]:
    """The ``Retry-After`` header of a 503."""
    return {"retry-after": str(RETRY_AFTER_SECONDS)}


@contextlib.contextmanager
def route_deadline(seconds: float = ROUTE_RETRY_SECONDS) -> Iterator[None]:
    """Catalog retries inside the block end after ``seconds`` (default
    :data:`ROUTE_RETRY_SECONDS`; call it in the thread that runs the catalog work)."""
    with retry_deadline(seconds):
        yield


class RouteDeadline:
    """ASGI middleware: every catalog retry an HTTP request causes (in its task, or in the
    threads its handler hands work to: they copy its context) ends within ``seconds`` of
    the request's start, so no request (and no thread shutdown must wait for) is held for
    the whole ``CACHELAYER_DB_RETRY_SECONDS`` by a catalog that is down."""

    def __init__(self, app: ASGIApp, seconds: float = ROUTE_RETRY_SECONDS) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with retry_deadline(self.seconds):
            await self.app(scope, receive, send)


def describe(exc: BaseException) -> str:
    """One line of at most 300 characters naming what failed (the driver's first line for
    a raw SQLAlchemy error: never its SQL or parameters)."""
    text = " ".join(first_line(exc).split()) or type(exc).__name__
    return text[:300]


def unavailable(exc: BaseException, *, what: str = "unavailable") -> Response:
    """``503`` (JSON ``{"error": what, "detail": ...}``) with ``Retry-After``, for a failure
    of the catalog or the store."""
    return JSONResponse({"error": what, "detail": describe(exc)}, 503, headers=retry_after())


async def _handler(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: 503 (%s)", request.method, request.url.path, describe(exc))
    return unavailable(exc)


#: Starlette ``exception_handlers``: the catalog's and the store's failures (typed: the
#: stores turn botocore's errors into :class:`~cachelayer.errors.StorageError`; or raw
#: SQLAlchemy errors of code not behind the catalog's ``Database``) answer 503.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    CacheLayerError: _handler,
    SQLAlchemyError: _handler,
}
