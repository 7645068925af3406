"""Catalog tables and queries of ``cachelayer serve``: shared server state and webhook
deliveries (migration ``0003``; documented in ``docs/SCHEMA.md``).

* ``server_state``: small named values every process sharing the catalog must agree on;
  today the generated gateway secret (``gateway_secret``).
* ``webhook_deliveries``: the ``webhook-id`` of every accepted webhook delivery, so a
  redelivery (Standard Webhooks keeps the id across retries) is acknowledged and ignored.

Plus the one query the gateway needs on ``output_files``: the stored file with a given key
(indexed by ``ix_output_files_key``).
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from cachelayer.catalog.models import Base, OutputFile
from cachelayer.catalog.models import Prediction as PredictionRow
from cachelayer.catalog.predictions import prediction_values
from cachelayer.catalog.records import FileRecord
from cachelayer.catalog.session import dialect_insert
from cachelayer.prediction import Prediction

__all__ = ["GATEWAY_SECRET", "ServerState", "ServerStateValue", "WebhookDeliveryRow", "gateway_secret"]

_TERMINAL = ("succeeded", "failed", "canceled", "aborted")

#: Name of the generated gateway secret in ``server_state``.
GATEWAY_SECRET = "gateway_secret"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ServerStateValue(Base):
    """One named value shared by every process of a catalog (table ``server_state``)."""

    __tablename__ = "server_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """One accepted webhook delivery, by its ``webhook-id`` (table ``webhook_deliveries``)."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    prediction_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(index=True)


class ServerState:
    """Named queries over ``server_state``, ``webhook_deliveries`` and the gateway's lookup
    of ``output_files``. Thread-safe; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def _insert(self, model: Any) -> Any:
        return dialect_insert(self.engine.dialect.name, model.__table__)

    # ---- named values -------------------------------------------------------------------

    def get_or_create(self, name: str, value: str) -> str:
        """The value stored under ``name``; stores ``value`` first if there is none. Every
        process racing here gets the same answer (the first insert wins)."""
        stmt = (
            self._insert(ServerStateValue)
            .values(name=name, value=value, created_at=_utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        with self.sessions.begin() as s:
            s.execute(stmt)
            return str(s.scalar(select(ServerStateValue.value).where(ServerStateValue.name == name)))

    # ---- predictions in progress ----------------------------------------------------------

    def record_progress(self, prediction: Prediction) -> bool:
        """Record a snapshot of a prediction that has not finished (``starting`` or
        ``processing``: a create's answer, a ``start``/``output`` webhook) unless the catalog
        already holds it as finished: webhooks may arrive out of order and a create's answer
        may be recorded after the ``completed`` webhook, and neither may turn a finished
        prediction back into a running one. Returns whether a row was written. Raises
        :class:`~cachelayer.errors.CatalogWriteError` as :meth:`PredictionRepository.record`."""
        values = prediction_values(prediction)  # the same row as every other writer
        table = PredictionRow.__table__
        stmt = self._insert(PredictionRow).values(**values)
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
            where=table.c.status.not_in(_TERMINAL),
        ).returning(table.c.id)
        with self.sessions.begin() as s:
            return s.execute(stmt).first() is not None

    # ---- webhook deliveries ---------------------------------------------------------------

    def claim_delivery(self, webhook_id: str, prediction_id: str | None, status: str | None) -> bool:
        """Record ``webhook_id`` as received; ``False`` if it was already (a redelivery)."""
        stmt = (
            self._insert(WebhookDeliveryRow)
            .values(
                webhook_id=webhook_id[:255],
                prediction_id=(prediction_id or None) and prediction_id[:64],
                status=(status or None) and status[:16],
                received_at=_utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["webhook_id"])
            .returning(WebhookDeliveryRow.__table__.c.webhook_id)
        )
        with self.sessions.begin() as s:  # RETURNING: rowcount is unreliable for DO NOTHING
            return s.execute(stmt).first() is not None

    def forget_delivery(self, webhook_id: str) -> None:
        """Drop a claimed delivery whose handling failed, so its redelivery is processed."""
        with self.sessions.begin() as s:
            s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id[:255]))

    def prune_deliveries(self, older_than_seconds: float) -> int:
        """Delete deliveries received more than ``older_than_seconds`` ago; returns how many."""
        cutoff = _utcnow() - timedelta(seconds=older_than_seconds)
        with self.sessions.begin() as s:
            result = s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.received_at < cutoff))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def delivery_count(self) -> int:
        """Number of remembered deliveries."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(WebhookDeliveryRow)) or 0)

    # ---- the gateway ------------------------------------------------------------------------

    def stored_file(self, key: str, store: str | None = None) -> FileRecord | None:
        """The ``stored`` file with object key ``key`` in any store (its ``store`` column says
        which), or only in ``store`` (its URI, e.g. ``s3://bucket``); ``None`` if there is none."""
        where = [OutputFile.key == key, OutputFile.status == "stored"]
        if store is not None:
            where.append(OutputFile.store == store)
        with self.sessions() as s:
            row = s.scalars(select(OutputFile).where(*where).order_by(OutputFile.id).limit(1)).first()
            return FileRecord.of(row) if row is not None else None

    def file_totals(self) -> dict[str, tuple[int, int]]:
        """``{status: (files, bytes)}`` over every output file (bytes of recorded sizes)."""
        with self.sessions() as s:
            total = func.coalesce(func.sum(OutputFile.size), 0)
            rows = s.execute(select(OutputFile.status, func.count(), total).group_by(OutputFile.status))
            return {str(status): (int(n), int(size or 0)) for status, n, size in rows}


_secrets: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()
_secrets_lock = threading.Lock()


def gateway_secret(engine: Engine, configured: str | None) -> bytes:
    """The HMAC key of gateway URLs: ``configured`` (``CACHELAYER_GATEWAY_SECRET``) as UTF-8,
    else the secret generated once and kept in the catalog's ``server_state`` (created on
    first use, so every process sharing the catalog agrees). Cached per engine.

    Raises :class:`~cachelayer.errors.CatalogUnavailableError`-style SQLAlchemy errors only
    when the catalog cannot be read."""
    from cachelayer.gateway_urls import new_secret, secret_bytes

    if configured:
        return secret_bytes(configured)
    with _secrets_lock:
        cached = _secrets.get(engine)
        if cached is None:
            cached = secret_bytes(ServerState(engine).get_or_create(GATEWAY_SECRET, new_secret()))
            _secrets[engine] = cached
        return cached
