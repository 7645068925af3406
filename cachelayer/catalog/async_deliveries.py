"""The inbox write of a webhook acknowledgement from the event loop (PostgreSQL).

:meth:`~cachelayer.catalog.server_state.ServerState.claim_delivery` run in a thread costs
an acknowledgement two thread hops (loop to a worker thread and back) and a connection of
the shared pool, which the copy threads also use. With copies running in the same process
those hops wait for the GIL and for the CPU, and the pool opens and closes connections
beyond its size as the load swings: the ack p99 at 8 concurrent deliveries was the sum of
those waits (docs/BENCHMARKS.md, "Serve: the acknowledgement on the event loop").
:class:`AsyncDeliveries` runs the very same statement (compiled from the same SQLAlchemy
``INSERT ... ON CONFLICT DO NOTHING RETURNING``) on psycopg's asyncio connections of its
own, so the loop awaits the database like any socket: no thread, no shared pool.

Failures are those of the catalog: transient ones (a lost connection, the SQLSTATEs of
:mod:`cachelayer.catalog.retry`) are retried on a new connection with the same backoff for
at most the budget (and within any :func:`~cachelayer.catalog.retry.retry_deadline`), then
:class:`~cachelayer.errors.CatalogOutageError`; anything else is a
:class:`~cachelayer.errors.CatalogWriteError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from sqlalchemy import Engine

from cachelayer.catalog.models import MAX_WEBHOOK_ID
from cachelayer.catalog.retry import backoff_seconds, budget_left, first_line, is_transient_state
from cachelayer.catalog.server_state import delivery_insert
from cachelayer.catalog.session import utcnow
from cachelayer.errors import CatalogOutageError, CatalogWriteError

__all__ = ["ACK_CONNECTIONS", "AsyncDeliveries"]

log = logging.getLogger("cachelayer")

#: Connections :class:`AsyncDeliveries` opens at most (as many as acknowledgements were in
#: flight at once, kept open); acknowledgements beyond wait their turn. 4 halved the acks/s
#: at 64 concurrent deliveries on a loaded machine (each round trip waits for the CPU);
#: 16 is as many as the catalog's pool lends the thread path (docs/BENCHMARKS.md).
ACK_CONNECTIONS = 16
#: Seconds to connect, unless the URL says otherwise (as the catalog's engine).
CONNECT_TIMEOUT = 10


class AsyncDeliveries:
    """Writes deliveries into the inbox of the PostgreSQL catalog behind ``engine`` from the
    running asyncio loop, on at most ``connections`` connections of its own (autocommit,
    opened when first needed; bound to the loop that opened them: :meth:`close` on it).
    ``retry_seconds``: the retry budget of one write (the receiver's ``ack_retry_seconds``)."""

    def __init__(self, engine: Engine, *, retry_seconds: float, connections: int = ACK_CONNECTIONS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("AsyncDeliveries needs a PostgreSQL catalog")
        url = engine.url.set(drivername="postgresql")
        if "connect_timeout" not in url.query:
            url = url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT)})
        self._conninfo = url.render_as_string(hide_password=False)
        compiled = delivery_insert(engine.dialect.name).compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._defaults = dict(compiled.params)
        self.retry_seconds = retry_seconds
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(connections)
        self.loop = asyncio.get_running_loop()

    async def claim(self, webhook_id: str, prediction_id: str, status: str, body: bytes) -> bool:
        """Record the delivery ``webhook_id`` with its verified ``body`` in the inbox, as
        :meth:`ServerState.claim_delivery` does (lengths checked by the caller); ``False``
        when it was there already (a redelivery). Raises
        :class:`~cachelayer.errors.CatalogOutageError` past the retry budget and
        :class:`~cachelayer.errors.CatalogWriteError` when the database refuses it."""
        params = dict(self._defaults, webhook_id=webhook_id[:MAX_WEBHOOK_ID], prediction_id=prediction_id)
        params.update(status=status)
        params.update(received_at=utcnow(), body=body)
        budget = budget_left(self.retry_seconds)
        started = self.loop.time()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(self._sql, params)
                    return await cursor.fetchone() is not None
            except psycopg.Error as exc:
                if not _transient(exc):
                    raise CatalogWriteError(first_line(exc), prediction_id=prediction_id) from exc
                spent = self.loop.time() - started
                if spent >= budget:
                    raise CatalogOutageError(
                        f"the catalog did not answer for {round(budget, 1):g} s "
                        f"(CACHELAYER_DB_RETRY_SECONDS): {first_line(exc)}"
                    ) from exc
                if attempt == 1:
                    log.warning("catalog hiccup (%s); retrying", first_line(exc))
                await asyncio.sleep(min(backoff_seconds(attempt), budget - spent))

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            try:
                yield conn
            except BaseException:
                await conn.close()  # a failed or cancelled statement: never reuse it
                raise
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections (call on the loop that opened them)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def _transient(exc: psycopg.Error) -> bool:
    if exc.sqlstate:
        return is_transient_state(exc.sqlstate)
    # a refused or dropped connection, a server restart: no SQLSTATE
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
