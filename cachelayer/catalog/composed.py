"""The :class:`Catalog`: the repositories composed over one
:class:`~cachelayer.catalog.session.Database`, and the documented queries. Imported as
``from cachelayer.catalog import Catalog`` (the package imports this module, and with it
SQLAlchemy, when ``Catalog`` is first asked for)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from cachelayer.catalog.checkpoints import CheckpointRepository
from cachelayer.catalog.copies import CopyRepository
from cachelayer.catalog.files import FileRepository
from cachelayer.catalog.filters import FileFilter
from cachelayer.catalog.predictions import PredictionRepository
from cachelayer.catalog.queue import QueueRepository
from cachelayer.catalog.records import FileRecord, PredictionRecord
from cachelayer.catalog.reports import Page, PredictionFiles, ReportRepository, StatsBy, StatsRow
from cachelayer.catalog.reruns import RerunRepository
from cachelayer.catalog.session import Database
from cachelayer.catalog.tombstones import TombstoneRepository

__all__ = ["Catalog"]


class Catalog:
    """The catalog of one database (``engine``); thread-safe.

    Repositories: ``predictions``, ``files``, ``queue``, ``reports``, ``checkpoints``,
    ``reruns``, ``copies``, ``tombstones``.
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
        self.predictions = PredictionRepository(self.db)
        self.files = FileRepository(self.db)
        self.queue = QueueRepository(self.db)
        self.reports = ReportRepository(self.db)
        self.checkpoints = CheckpointRepository(self.db)
        self.reruns = RerunRepository(self.db)
        self.copies = CopyRepository(self.db)
        self.tombstones = TombstoneRepository(self.db)

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
        model: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prediction_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of output files, newest first by ``(created_at, id)``.

        Conditions (``None``: any): ``model``, ``status`` (``pending``, ``stored``,
        ``expired``, ``failed``), ``since <= created_at < until`` and ``prediction_id``.
        ``limit`` is the page size (1..10,000); ``cursor`` the ``next_cursor`` of the
        previous page. Raises :class:`~cachelayer.errors.ConfigError` for a bad status or
        limit and :class:`CursorError` for a malformed cursor. With a :class:`FileFilter`:
        :meth:`ReportRepository.list_files <cachelayer.catalog.reports.ReportRepository.list_files>`.
        """
        flt = FileFilter.of(model=model, status=status, since=since, until=until, prediction_id=prediction_id)
        return self.reports.list_files(flt, limit=limit, cursor=cursor)

    def iter_files(
        self,
        model: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prediction_id: str | None = None,
        *,
        batch_size: int = 1000,
    ) -> Iterator[FileRecord]:
        """Every matching file, newest first (filters as :meth:`list_files`); streams in
        keyset pages of ``batch_size`` rows, each its own short transaction."""
        flt = FileFilter.of(model=model, status=status, since=since, until=until, prediction_id=prediction_id)
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
