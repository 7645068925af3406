"""The ``predictions`` table: record a typed prediction, read it back, follow reruns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, or_, select

from cachelayer.catalog.encoding import escape_text
from cachelayer.catalog.models import MAX_MODEL, MAX_PREDICTION_ID, OUTPUT_FILES, PREDICTIONS, TOMBSTONES
from cachelayer.catalog.records import FileStatus, PredictionRecord
from cachelayer.catalog.session import Database, by_key, chunked, utcnow
from cachelayer.catalog.tombstones import refuse_deleted_in
from cachelayer.datauri import redact_data_uris
from cachelayer.errors import CatalogWriteError
from cachelayer.outputs import durable_output as durable_of
from cachelayer.prediction import Prediction as PredictionIn

__all__ = ["PredictionRepository", "check_prediction_id", "record_in", "set_complete_output_in"]

#: Ids looked up per statement by :meth:`PredictionRepository.get_many`.
LOOKUP_BATCH = 500
#: Statuses of a prediction that has not finished (Replicate's API reference).
UNFINISHED = ("starting", "processing")


def check_prediction_id(prediction_id: str, model: str | None = None) -> None:
    """Raise :class:`~cachelayer.errors.CatalogWriteError` for an id or model the catalog
    cannot record, on both databases alike: an id that is empty or over 64 characters, a
    model over 1,024 bytes of UTF-8 (lengths once escaped; both columns are indexed, and a
    PostgreSQL index entry holds at most 2,704 bytes)."""
    n = len(escape_text(prediction_id))
    if not prediction_id or n > MAX_PREDICTION_ID:
        raise CatalogWriteError(
            f"a prediction id must have 1 to {MAX_PREDICTION_ID} characters, this one has {n}",
            prediction_id=prediction_id,
        )
    size = len(escape_text(model).encode("utf-8")) if model is not None else 0
    if size > MAX_MODEL:
        raise CatalogWriteError(
            f"a model name may have at most {MAX_MODEL} bytes (UTF-8), this one has {size}",
            prediction_id=prediction_id,
        )


def prediction_values(prediction: PredictionIn, *, rerun_of: str | None = None) -> dict[str, Any]:
    """The ``predictions`` row of ``prediction``, as every writer records it: ids checked,
    ``data:`` payloads redacted from the output, ``recorded_at``/``updated_at`` now. Raises
    :class:`~cachelayer.errors.CatalogWriteError` for an id or model the catalog cannot hold."""
    p = prediction
    check_prediction_id(p.id, p.model)
    if rerun_of is not None:
        check_prediction_id(rerun_of)
    now = utcnow()
    return {
        "id": p.id,
        "model": p.model,
        "version": p.version,
        "status": p.status.value,
        "source": p.source,
        "input": p.input or None,
        "output": redact_data_uris(p.output),
        "error": p.error,
        "created_at": p.created_at,
        "started_at": p.started_at,
        "completed_at": p.completed_at,
        "data_removed": p.data_removed,
        "rerun_of": rerun_of,
        "recorded_at": now,
        "updated_at": now,
    }


_UPSERTS: dict[str, Any] = {}

_PREDICTIONS = PREDICTIONS
#: Core ``UPDATE`` of a prediction's ``durable_output``, built once (no ORM bookkeeping).
_SET_DURABLE = (
    _PREDICTIONS.update()
    .where(_PREDICTIONS.c.id == bindparam("p_id"))
    .values(durable_output=bindparam("p_durable"), updated_at=bindparam("p_now"))
)
_F = OUTPUT_FILES.c
#: A prediction's recorded output, only once no file of it is left unstored.
_OUTPUT_IF_COMPLETE = select(_PREDICTIONS.c.output).where(
    _PREDICTIONS.c.id == bindparam("p_id"),
    ~exists().where(_F.prediction_id == bindparam("p_id"), _F.status != FileStatus.STORED),
)
_FILE_KEYS = select(_F.output_path, _F.key).where(_F.prediction_id == bindparam("p_id"))


def _upsert(db: Database) -> Any:
    """The ``INSERT .. ON CONFLICT DO UPDATE`` of the rules of
    :meth:`PredictionRepository.record`, built once per dialect (values come as parameters,
    so SQLAlchemy compiles it once)."""
    stmt = _UPSERTS.get(db.dialect)
    if stmt is None:
        ins = db.insert(PREDICTIONS)
        ex = ins.excluded
        keep = PREDICTIONS.c
        stmt = ins.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "model": ex.model,
                "version": ex.version,
                "status": ex.status,
                "source": ex.source,
                "error": ex.error,
                "created_at": ex.created_at,
                "started_at": ex.started_at,
                "completed_at": ex.completed_at,
                "data_removed": or_(keep.data_removed, ex.data_removed),
                "input": func.coalesce(ex.input, keep.input),
                "output": func.coalesce(ex.output, keep.output),
                "rerun_of": func.coalesce(keep.rerun_of, ex.rerun_of),
                "updated_at": ex.updated_at,
            },
        )
        _UPSERTS[db.dialect] = stmt
    return stmt


def record_in(s: Connection, db: Database, prediction: PredictionIn, *, rerun_of: str | None = None) -> None:
    """Record ``prediction`` (the rules of :meth:`PredictionRepository.record`) inside the
    caller's transaction ``s``. Raises :class:`~cachelayer.errors.PredictionDeletedError`
    for a deleted prediction (a tombstone), writing nothing."""
    refuse_deleted_in(s, prediction.id)
    s.execute(_upsert(db), prediction_values(prediction, rerun_of=rerun_of))


def _set_durable_in(c: Connection, prediction_id: str, durable_output: Any) -> bool:
    params = {"p_id": prediction_id, "p_durable": redact_data_uris(durable_output), "p_now": utcnow()}
    return bool(c.execute(_SET_DURABLE, params).rowcount)


def set_complete_output_in(c: Connection, prediction_id: str, object_uri: Callable[[str], str]) -> bool:
    """Inside the caller's transaction ``c``: once no file of the prediction is left
    unstored (as ``c`` sees its files), record its durable output, computed from its
    recorded output with each file as ``object_uri(key)``
    (:func:`cachelayer.outputs.durable_output`). Returns whether it was recorded (``False``:
    files left, no recorded output, or an unknown prediction)."""
    output = c.execute(_OUTPUT_IF_COMPLETE, {"p_id": prediction_id}).scalar()
    if output is None:
        return False
    keys = {path: object_uri(key) for path, key in c.execute(_FILE_KEYS, {"p_id": prediction_id})}
    return _set_durable_in(c, prediction_id, durable_of(output, keys))


class PredictionRepository:
    """Named queries over ``predictions`` (see docs/SCHEMA.md)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, prediction: PredictionIn, *, rerun_of: str | None = None) -> None:
        """Insert or update a prediction (the typed :class:`cachelayer.prediction.Prediction`).

        A later snapshot updates status, times and ``data_removed``; a recorded ``input``
        or ``output`` is never overwritten by the ``null`` Replicate shows after removal.
        ``data:`` URIs in the output are recorded in their redacted form (their payload
        never enters the catalog). Raises :class:`~cachelayer.errors.CatalogWriteError`
        when the prediction cannot be recorded (then nothing of it is),
        :class:`~cachelayer.errors.PredictionDeletedError` for a deleted one and
        :class:`~cachelayer.errors.CatalogOutageError`.
        """
        self.db.write_core(
            lambda c: record_in(c, self.db, prediction, rerun_of=rerun_of), prediction_id=prediction.id
        )

    def set_durable_output(self, prediction_id: str, durable_output: Any) -> None:
        """Record the output with each stored file replaced by its object URI (``data:``
        URIs of files not stored are redacted)."""
        self.db.write_core(
            lambda c: _set_durable_in(c, prediction_id, durable_output), prediction_id=prediction_id
        )

    def get(self, prediction_id: str) -> PredictionRecord | None:
        """The recorded prediction, or ``None``."""

        def work(s: Connection) -> PredictionRecord | None:
            row = by_key(s, PREDICTIONS, prediction_id)
            return PredictionRecord.of(row) if row else None

        return self.db.read(work)

    def finished_at(self, prediction_id: str) -> datetime | None:
        """When the recorded prediction completed (else when it was created); ``None`` for
        an unknown one. Reads two columns, not the JSON of input and output."""
        row = self.db.read(
            lambda s: s.execute(
                select(PREDICTIONS.c.completed_at, PREDICTIONS.c.created_at).where(
                    PREDICTIONS.c.id == prediction_id
                )
            ).first()
        )
        return (row[0] or row[1]) if row is not None else None

    def finished_at_of_queued(self, files: int) -> dict[str, datetime | None]:
        """:meth:`finished_at` of every prediction among the next ``files`` pending files
        of the queue (in claim order: ``available_at``), in one statement: a worker reads
        ahead of its claims instead of once per prediction. Returns ``{prediction id:
        completion (else creation) time}``. Raises, as every read,
        :class:`~cachelayer.errors.CatalogOutageError` or
        :class:`~cachelayer.errors.CatalogError`."""
        queued = (
            select(OUTPUT_FILES.c.prediction_id)
            .where(OUTPUT_FILES.c.status == FileStatus.PENDING)
            .order_by(OUTPUT_FILES.c.available_at)
            .limit(files)
        )
        stmt = select(PREDICTIONS.c.id, PREDICTIONS.c.completed_at, PREDICTIONS.c.created_at).where(
            PREDICTIONS.c.id.in_(queued.scalar_subquery())
        )
        return {row[0]: row[1] or row[2] for row in self.db.read(lambda s: s.execute(stmt).all())}

    def get_many(self, prediction_ids: Iterable[str]) -> dict[str, PredictionRecord]:
        """The recorded predictions among ``prediction_ids`` (unknown ids are absent)."""
        ids = list(dict.fromkeys(prediction_ids))

        def work(s: Connection) -> dict[str, PredictionRecord]:
            found: dict[str, PredictionRecord] = {}
            for chunk in chunked(ids, LOOKUP_BATCH):
                for row in s.execute(select(PREDICTIONS).where(PREDICTIONS.c.id.in_(chunk))):
                    found[row.id] = PredictionRecord.of(row)
            return found

        return self.db.read(work)

    def reruns_of(self, prediction_id: str) -> list[PredictionRecord]:
        """Predictions recorded as reruns of ``prediction_id``, oldest first."""
        return self.db.read(
            lambda s: [
                PredictionRecord.of(r)
                for r in s.execute(
                    select(PREDICTIONS)
                    .where(PREDICTIONS.c.rerun_of == prediction_id)
                    .order_by(PREDICTIONS.c.recorded_at)
                )
            ]
        )

    # ---- the sweep (cachelayer.sweep) ---------------------------------------------------

    def unfinished(self, limit: int) -> list[str]:
        """Ids of up to ``limit`` predictions recorded as ``starting`` or ``processing``
        whose data is not known to be gone and that were not deleted, oldest first: the
        ones the sweep re-reads until they finish."""
        stmt = (
            select(PREDICTIONS.c.id)
            .where(
                PREDICTIONS.c.status.in_(UNFINISHED),
                PREDICTIONS.c.data_removed.is_(False),
                ~exists().where(TOMBSTONES.c.prediction_id == PREDICTIONS.c.id),
            )
            .order_by(PREDICTIONS.c.created_at, PREDICTIONS.c.id)
            .limit(limit)
        )
        return self.db.read(lambda s: list(s.scalars(stmt)))

    def mark_lost(self, prediction_id: str, reason: str) -> bool:
        """Record that an unfinished prediction can no longer be read from Replicate (e.g.
        ``GET /v1/predictions/{id}`` answered 404): ``data_removed`` with ``reason`` as its
        ``error``, so the sweep stops re-reading it. A finished row is left alone. Returns
        whether a row was updated."""
        stmt = (
            _PREDICTIONS.update()
            .where(_PREDICTIONS.c.id == prediction_id, _PREDICTIONS.c.status.in_(UNFINISHED))
            .values(data_removed=True, error=reason, updated_at=utcnow())
        )
        return self.db.write_core(lambda c: bool(c.execute(stmt).rowcount), prediction_id=prediction_id)
