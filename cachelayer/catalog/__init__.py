"""The catalog: SQL tables that map predictions and source URLs to objects, and the queue.

All SQL of cachelayer lives in this package, as named queries grouped in small
repositories over one :class:`~cachelayer.catalog.session.Database` (engine, sessions,
retries of transient errors):

=================  ==========================================================================
``predictions``    :class:`~cachelayer.catalog.predictions.PredictionRepository`: record a
                   typed prediction, read it, follow reruns
``files``          :class:`~cachelayer.catalog.files.FileRepository`: a prediction's file
                   rows, source URL aliases, resolve a source URL
``queue``          :class:`~cachelayer.catalog.queue.QueueRepository`: claims, leases,
                   outcomes (stored, failed, expired, re-queued), counts
``reports``        :class:`~cachelayer.catalog.reports.ReportRepository`: listings with
                   keyset cursors, show, statistics
``checkpoints``    :class:`~cachelayer.catalog.checkpoints.CheckpointRepository`: progress
                   of long-running jobs, keyed by the filter's spec
``reruns``         :class:`~cachelayer.catalog.reruns.RerunRepository`: the at-most-once
                   rerun claims
=================  ==========================================================================

:class:`Catalog` composes them (``catalog.queue.claim_next(...)``) and offers the documented
query methods directly. Values Replicate can send that a database would refuse are stored
under lossless rules (:mod:`cachelayer.catalog.encoding`, docs/SCHEMA.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cachelayer.catalog.checkpoints import CheckpointRecord, CheckpointRepository, checkpoint_name
from cachelayer.catalog.encoding import catalog_url
from cachelayer.catalog.files import FileRepository
from cachelayer.catalog.filters import FileFilter
from cachelayer.catalog.predictions import PredictionRepository
from cachelayer.catalog.queue import QueueRepository
from cachelayer.catalog.records import FileRecord, FileStatus, NewFile, PredictionRecord
from cachelayer.catalog.reports import CursorError, Page, PredictionFiles, ReportRepository, StatsBy, StatsRow
from cachelayer.catalog.reruns import RerunRepository
from cachelayer.catalog.session import Database
from cachelayer.prediction import Prediction

__all__ = [
    "Catalog",
    "CheckpointRecord",
    "CursorError",
    "FileFilter",
    "FileRecord",
    "FileStatus",
    "NewFile",
    "Page",
    "PredictionFiles",
    "PredictionRecord",
    "StatsBy",
    "StatsRow",
    "catalog_url",
    "checkpoint_name",
]


class Catalog:
    """The catalog of one database (``engine``); thread-safe.

    Repositories: ``predictions``, ``files``, ``queue``, ``reports``, ``checkpoints``,
    ``reruns``.
    Every method runs its own short transaction (callers never hold locks while moving
    bytes), retried after transient errors for ``retry_seconds`` (default: the engine's
    setting from :func:`~cachelayer.catalog.db.make_engine`, else 60 s). Errors: a
    :class:`~cachelayer.errors.CatalogOutageError` past that budget, a
    :class:`~cachelayer.errors.CatalogWriteError` for a record the database refuses, a
    :class:`~cachelayer.errors.CatalogError` for anything else; never an SQLAlchemy error.
    """

    def __init__(self, engine: Engine, *, retry_seconds: float | None = None) -> None:
        self.db = Database(engine, retry_seconds=retry_seconds)
        #: The SQLAlchemy engine.
        self.engine: Engine = engine
        #: The session factory (for code being migrated; new code goes through repositories).
        self.sessions: sessionmaker[Session] = self.db.sessions
        self.predictions = PredictionRepository(self.db)
        self.files = FileRepository(self.db)
        self.queue = QueueRepository(self.db)
        self.reports = ReportRepository(self.db)
        self.checkpoints = CheckpointRepository(self.db)
        self.reruns = RerunRepository(self.db)

    def ping(self) -> None:
        """One ``SELECT 1``: raises whatever the database raises when it does not answer
        (for health checks). Tried a second time only when the first failed on a pooled
        connection the server had closed (a restart), so a database that is back answers."""
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    # ---- the documented queries -----------------------------------------------------------

    def list_files(
        self,
        model: str | FileFilter | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prediction_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of output files, newest first by ``(created_at, id)``.

        The first argument is a :class:`FileFilter`, or (as before) the model; the keyword
        conditions ``model``, ``status`` (``pending``, ``stored``, ``expired``, ``failed``),
        ``since <= created_at < until`` and ``prediction_id`` are added on top. ``limit`` is
        the page size (1..10,000); ``cursor`` the ``next_cursor`` of the previous page.
        Raises :class:`~cachelayer.errors.ConfigError` for a bad status or limit and
        :class:`CursorError` for a malformed cursor. See
        :meth:`ReportRepository.list_files <cachelayer.catalog.reports.ReportRepository.list_files>`.
        """
        flt = _filter(model, status=status, since=since, until=until, prediction_id=prediction_id)
        return self.reports.list_files(flt, limit=limit, cursor=cursor)

    def iter_files(
        self,
        model: str | FileFilter | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prediction_id: str | None = None,
        *,
        batch_size: int = 1000,
    ) -> Iterator[FileRecord]:
        """Every matching file, newest first (filters as :meth:`list_files`); streams in
        keyset pages of ``batch_size`` rows, each its own short transaction."""
        flt = _filter(model, status=status, since=since, until=until, prediction_id=prediction_id)
        return self.reports.iter_files(flt, batch_size=batch_size)

    def show(self, prediction_id: str) -> PredictionFiles | None:
        """The recorded prediction and its files by output path; ``None`` if not recorded."""
        return self.reports.show(prediction_id)

    def stats(
        self,
        by: StatsBy = "model",
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        where: FileFilter | None = None,
    ) -> list[StatsRow]:
        """File counts per status and bytes stored, grouped ``by`` ``model``, ``day`` (UTC
        day of creation) or ``status``, over the files matching ``where`` and
        ``since <= created_at < until``. Raises :class:`~cachelayer.errors.ConfigError` for
        an unknown ``by``."""
        return self.reports.stats(by, FileFilter.of(where, since=since, until=until))

    def resolve(self, url: str) -> FileRecord | None:
        """The stored file that ``url`` (current or any earlier source URL, or a ``data:``
        URI) was copied into, or ``None``."""
        return self.files.resolve(url)

    def resolve_many(self, urls: Iterable[str]) -> dict[str, FileRecord | None]:
        """Bulk :meth:`resolve`: ``{url: record or None}`` in input order."""
        return self.files.resolve_many(urls)

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The recorded prediction, or ``None``."""
        return self.predictions.get(prediction_id)

    def files_of(self, prediction_id: str) -> list[FileRecord]:
        """Every file row of a prediction, ordered by output path."""
        return self.files.of_prediction(prediction_id)

    # ---- kept for callers being migrated: thin delegates to the repositories ---------------

    def record_prediction(self, prediction: Prediction, *, rerun_of: str | None = None) -> None:
        """Kept for callers being migrated: ``catalog.predictions.record``."""
        self.predictions.record(prediction, rerun_of=rerun_of)

    def set_durable_output(self, prediction_id: str, durable_output: Any) -> None:
        """Kept for callers being migrated: ``catalog.predictions.set_durable_output``."""
        self.predictions.set_durable_output(prediction_id, durable_output)

    def reruns_of(self, prediction_id: str) -> list[PredictionRecord]:
        """Kept for callers being migrated: ``catalog.predictions.reruns_of``."""
        return self.predictions.reruns_of(prediction_id)

    def predictions_by_id(self, prediction_ids: Iterable[str]) -> dict[str, PredictionRecord]:
        """Kept for callers being migrated: ``catalog.predictions.get_many``."""
        return self.predictions.get_many(prediction_ids)

    def ensure_files(
        self,
        prediction_id: str,
        files: Sequence[NewFile],
        *,
        store: str,
        model: str | None,
        created_at: datetime | None,
    ) -> list[FileRecord]:
        """Kept for callers being migrated: ``catalog.files.ensure``."""
        return self.files.ensure(prediction_id, files, store=store, model=model, created_at=created_at)

    def add_source_url(self, file_id: int, url: str) -> None:
        """Kept for callers being migrated: ``catalog.files.add_source_url``."""
        self.files.add_source_url(file_id, url)

    def get_file(self, file_id: int) -> FileRecord | None:
        """Kept for callers being migrated: ``catalog.files.get``."""
        return self.files.get(file_id)

    def claim(self, file_id: int, owner: str, lease_seconds: float) -> FileRecord | None:
        """Kept for callers being migrated: ``catalog.queue.claim``."""
        return self.queue.claim(file_id, owner, lease_seconds)

    def claim_next(self, owner: str, lease_seconds: float) -> FileRecord | None:
        """Kept for callers being migrated: ``catalog.queue.claim_next``."""
        return self.queue.claim_next(owner, lease_seconds)

    def renew(self, file_ids: Iterable[int], owner: str, lease_seconds: float) -> None:
        """Kept for callers being migrated: ``catalog.queue.renew``."""
        self.queue.renew(file_ids, owner, lease_seconds)

    def mark_stored(
        self,
        file_id: int,
        owner: str,
        *,
        size: int,
        sha256: str,
        content_type: str | None,
        source_age_seconds: float | None,
    ) -> FileRecord | None:
        """Kept for callers being migrated: ``catalog.queue.mark_stored``."""
        return self.queue.mark_stored(
            file_id,
            owner,
            size=size,
            sha256=sha256,
            content_type=content_type,
            source_age_seconds=source_age_seconds,
        )

    def mark_unstored(
        self,
        file_id: int,
        owner: str,
        *,
        status: str,
        error: str,
        source_age_seconds: float | None = None,
        retry_after: float | None = None,
    ) -> FileRecord | None:
        """Kept for callers being migrated: ``catalog.queue.mark_unstored``."""
        return self.queue.mark_unstored(
            file_id,
            owner,
            status=status,
            error=error,
            source_age_seconds=source_age_seconds,
            retry_after=retry_after,
        )

    def mark_prediction_files_expired(self, prediction_id: str, error: str) -> int:
        """Kept for callers being migrated: ``catalog.queue.mark_prediction_expired``."""
        return self.queue.mark_prediction_expired(prediction_id, error)

    def mark_unverified(
        self, file_id: int, *, status: str, error: str, expected_sha256: str | None = None
    ) -> bool:
        """Kept for callers being migrated: ``catalog.queue.mark_unverified``."""
        return self.queue.mark_unverified(
            file_id, status=status, error=error, expected_sha256=expected_sha256
        )

    def release_leases(self, owners: Iterable[str]) -> int:
        """Kept for callers being migrated: ``catalog.queue.release_leases``."""
        return self.queue.release_leases(owners)

    def lease_owners(self) -> list[str]:
        """Kept for callers being migrated: ``catalog.queue.lease_owners``."""
        return self.queue.lease_owners()

    def queue_counts(self) -> dict[str, int]:
        """Kept for callers being migrated: ``catalog.queue.counts``."""
        return self.queue.counts()

    def count_unleased_pending(self) -> int:
        """Kept for callers being migrated: ``catalog.queue.count_unleased_pending``."""
        return self.queue.count_unleased_pending()

    def load_checkpoint(self, name: str) -> tuple[str | None, dict[str, Any]]:
        """Kept for callers being migrated: ``catalog.checkpoints.load`` as ``(cursor,
        state)``; ``(None, {})`` when there is none."""
        saved = self.checkpoints.load(name)
        return (saved.cursor, saved.state) if saved else (None, {})

    def save_checkpoint(self, name: str, cursor: str | None, state: dict[str, Any]) -> None:
        """Kept for callers being migrated: ``catalog.checkpoints.save``."""
        self.checkpoints.save(name, cursor, state)


def _filter(first: str | FileFilter | None, **conditions: Any) -> FileFilter:
    if isinstance(first, FileFilter):
        return FileFilter.of(first, **conditions)
    return FileFilter.of(None, model=first, **conditions)
