"""Catalog queries of ``cachelayer serve``: shared server state, webhook deliveries (the
de-duplication rows and the inbox) and file totals. The tables live in
:mod:`cachelayer.catalog.models` (``server_state``, ``webhook_deliveries``; migrations
``0004`` and ``0005``; documented in ``docs/SCHEMA.md``).

* ``server_state``: small named values every process sharing the catalog must agree on;
  today the generated gateway secret (``gateway_secret``).
* ``webhook_deliveries``: the ``webhook-id`` of every accepted webhook delivery, so a
  redelivery (Standard Webhooks keeps the id across retries) is acknowledged and ignored;
  a delivery ``serve`` acknowledged but has not acted on yet keeps its body there (the
  inbox, drained by :class:`cachelayer.webhooks.WebhookInbox`).

Every statement runs through the catalog's one :class:`~cachelayer.catalog.session.Database`,
so transient errors are retried within its budget and none leaves as a SQLAlchemy error:
:class:`~cachelayer.errors.CatalogOutageError` past the budget,
:class:`~cachelayer.errors.CatalogWriteError` / :class:`~cachelayer.errors.CatalogError`
otherwise.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, exists, func, select, update

from cachelayer.catalog.models import (
    MAX_WEBHOOK_ID,
    OUTPUT_FILES,
    PREDICTIONS,
    SERVER_STATE,
    TOMBSTONES,
    WEBHOOK_DELIVERIES,
)
from cachelayer.catalog.predictions import prediction_values
from cachelayer.catalog.session import Database, utcnow
from cachelayer.prediction import Prediction

__all__ = [
    "GATEWAY_SECRET",
    "InboxDelivery",
    "ServerState",
    "gateway_secret",
]

_TERMINAL = ("succeeded", "failed", "canceled", "aborted")

#: Name of the generated gateway secret in ``server_state``.
GATEWAY_SECRET = "gateway_secret"

_DELIVERIES = WEBHOOK_DELIVERIES


@dataclass(frozen=True)
class InboxDelivery:
    """A delivery in the inbox: its ``webhook_id`` and the verified raw ``body`` (bytes)."""

    webhook_id: str
    body: bytes


class ServerState:
    """Named queries over ``server_state``, ``webhook_deliveries`` and totals of
    ``output_files``. ``db``: the catalog's :class:`Database` (or an engine, wrapped in
    one with the engine's retry budget). Thread-safe; every method is one short transaction."""

    def __init__(self, db: Database | Engine) -> None:
        self.db = db if isinstance(db, Database) else Database(db)
        self.engine = self.db.engine

    # ---- named values -------------------------------------------------------------------

    def get_or_create(self, name: str, value: str) -> str:
        """The value stored under ``name``; stores ``value`` first if there is none. Every
        process racing here gets the same answer (the first insert wins)."""
        stmt = (
            self.db.insert(SERVER_STATE)
            .values(name=name, value=value, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )

        def work(s: Any) -> str:
            s.execute(stmt)
            return str(s.scalar(select(SERVER_STATE.c.value).where(SERVER_STATE.c.name == name)))

        return self.db.write(work)

    # ---- predictions in progress ----------------------------------------------------------

    def record_progress(self, prediction: Prediction) -> bool:
        """Record a snapshot of a prediction that has not finished (``starting`` or
        ``processing``: a create's answer, a ``start``/``output`` webhook) unless the catalog
        already holds it as finished: webhooks may arrive out of order and a create's answer
        may be recorded after the ``completed`` webhook, and neither may turn a finished
        prediction back into a running one, nor touch a deleted one. Returns whether a row was written. Raises
        :class:`~cachelayer.errors.CatalogWriteError` as :meth:`PredictionRepository.record`."""
        values = prediction_values(prediction)  # the same row as every other writer
        table = PREDICTIONS
        stmt = self.db.insert(PREDICTIONS).values(**values)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": ex.status,
                "model": func.coalesce(ex.model, table.c.model),
                "version": func.coalesce(ex.version, table.c.version),
                "source": func.coalesce(ex.source, table.c.source),
                "input": func.coalesce(ex.input, table.c.input),
                "output": func.coalesce(ex.output, table.c.output),
                "started_at": func.coalesce(ex.started_at, table.c.started_at),
                "updated_at": ex.updated_at,
            },
            # never a deleted one either (its tombstone): its input and output stay erased
            where=table.c.status.not_in(_TERMINAL)
            & ~exists().where(TOMBSTONES.c.prediction_id == table.c.id),
        ).returning(table.c.id)
        return self.db.write_statement(
            lambda c: c.execute(stmt).first() is not None, prediction_id=prediction.id
        )

    # ---- webhook deliveries ---------------------------------------------------------------

    def claim_delivery(
        self, webhook_id: str, prediction_id: str | None, status: str | None, body: bytes | None = None
    ) -> bool:
        """Record ``webhook_id`` as received, in one statement; ``False`` if it was already
        (a redelivery). With ``body`` (the verified raw body) the delivery goes to the inbox,
        to be acted on later (:meth:`inbox`, :meth:`mark_processed`); without, it is recorded
        as acted on now. Ids are recorded as given: callers check their lengths
        (``webhook_id`` at most 255 characters, ``prediction_id`` 64, ``status`` 16)."""
        now = utcnow()
        stmt = (
            self.db.insert(WEBHOOK_DELIVERIES)
            .values(
                webhook_id=webhook_id[:MAX_WEBHOOK_ID],
                prediction_id=prediction_id or None,
                status=status or None,
                received_at=now,
                body=body,
                processed_at=None if body is not None else now,
            )
            .on_conflict_do_nothing(index_elements=["webhook_id"])
            .returning(_DELIVERIES.c.webhook_id)
        )
        # RETURNING: rowcount is unreliable for DO NOTHING
        return self.db.write_statement(
            lambda c: c.execute(stmt).first() is not None, prediction_id=prediction_id
        )

    def forget_delivery(self, webhook_id: str) -> None:
        """Drop a claimed delivery whose handling failed, so its redelivery is processed."""
        stmt = delete(WEBHOOK_DELIVERIES).where(
            WEBHOOK_DELIVERIES.c.webhook_id == webhook_id[:MAX_WEBHOOK_ID]
        )
        self.db.write_statement(lambda c: c.execute(stmt))

    def inbox(self, limit: int = 100, received_before: datetime | None = None) -> list[str]:
        """``webhook_id`` of up to ``limit`` deliveries not yet acted on, oldest first
        (received before ``received_before``, if given)."""
        query = select(WEBHOOK_DELIVERIES.c.webhook_id).where(WEBHOOK_DELIVERIES.c.processed_at.is_(None))
        if received_before is not None:
            query = query.where(WEBHOOK_DELIVERIES.c.received_at < received_before)
        query = query.order_by(WEBHOOK_DELIVERIES.c.received_at).limit(limit)
        return self.db.read(lambda s: [str(w) for w in s.scalars(query)])

    def inbox_delivery(self, webhook_id: str) -> InboxDelivery | None:
        """The delivery ``webhook_id`` if it is still in the inbox (not acted on), else ``None``."""
        query = select(WEBHOOK_DELIVERIES.c.body).where(
            WEBHOOK_DELIVERIES.c.webhook_id == webhook_id, WEBHOOK_DELIVERIES.c.processed_at.is_(None)
        )
        body = self.db.read(lambda s: s.scalar(query))
        return None if body is None else InboxDelivery(webhook_id, bytes(body))

    def mark_processed(self, webhook_id: str, error: str | None = None) -> None:
        """Take a delivery out of the inbox (acted on, or ``error`` saying why it cannot be);
        its body is dropped, its id kept for de-duplication."""
        stmt = (
            update(WEBHOOK_DELIVERIES)
            .where(WEBHOOK_DELIVERIES.c.webhook_id == webhook_id)
            .values(processed_at=utcnow(), body=None, error=error)
        )
        self.db.write_statement(lambda c: c.execute(stmt))

    def prune_deliveries(self, older_than_seconds: float) -> int:
        """Delete deliveries acted on and received more than ``older_than_seconds`` ago;
        returns how many."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        stmt = delete(WEBHOOK_DELIVERIES).where(
            WEBHOOK_DELIVERIES.c.received_at < cutoff, WEBHOOK_DELIVERIES.c.processed_at.is_not(None)
        )
        return self.db.write_statement(lambda c: int(c.execute(stmt).rowcount))

    def delivery_count(self) -> int:
        """Number of remembered deliveries."""
        query = select(func.count()).select_from(WEBHOOK_DELIVERIES)
        return self.db.read(lambda s: int(s.scalar(query) or 0))

    # ---- output files -----------------------------------------------------------------------

    def file_totals(self) -> dict[str, tuple[int, int]]:
        """``{status: (files, bytes)}`` over every output file (bytes of recorded sizes)."""
        total = func.coalesce(func.sum(OUTPUT_FILES.c.size), 0)
        query = select(OUTPUT_FILES.c.status, func.count(), total).group_by(OUTPUT_FILES.c.status)
        return self.db.read(
            lambda s: {str(status): (int(n), int(size or 0)) for status, n, size in s.execute(query)}
        )


_secrets: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()
_secrets_lock = threading.Lock()


def gateway_secret(engine: Engine, configured: str | None) -> bytes:
    """The HMAC key of gateway URLs: ``configured`` (``CACHELAYER_GATEWAY_SECRET``) as UTF-8,
    else the secret generated once and kept in the catalog's ``server_state`` (created on
    first use, so every process sharing the catalog agrees). Cached per engine.

    Raises :class:`~cachelayer.errors.CatalogOutageError` or
    :class:`~cachelayer.errors.CatalogError` only when the catalog cannot be read."""
    from cachelayer.gateway_urls import new_secret, secret_bytes

    if configured:
        return secret_bytes(configured)
    with _secrets_lock:
        cached = _secrets.get(engine)
        if cached is None:
            cached = secret_bytes(ServerState(engine).get_or_create(GATEWAY_SECRET, new_secret()))
            _secrets[engine] = cached
        return cached
