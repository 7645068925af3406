"""The ``output_files`` rows of a prediction and their ``source_urls`` aliases: record the
files of a prediction, read them, remember rotated URLs, resolve a source URL to its file.

Source URLs are recorded and looked up in :func:`~cachelayer.catalog.encoding.catalog_url`
form (``data:`` URIs redacted to their digest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from cachelayer.catalog.claims import claim_prediction_files
from cachelayer.catalog.encoding import catalog_url
from cachelayer.catalog.models import FILE_COLUMNS, OUTPUT_FILES, SOURCE_URLS
from cachelayer.catalog.predictions import check_prediction_id, record_in
from cachelayer.catalog.records import NO_COPY, FileRecord, FileStatus, NewFile
from cachelayer.catalog.session import Database, chunked, utcnow
from cachelayer.catalog.tombstones import refuse_deleted_in
from cachelayer.errors import CatalogWriteError
from cachelayer.prediction import Prediction as PredictionIn

__all__ = ["RESOLVE_BATCH", "FileRepository"]

#: URLs looked up per statement by :meth:`FileRepository.resolve_many` (stays well under
#: SQLite's 32,766 bound-parameter limit and keeps PostgreSQL plans on the index).
RESOLVE_BATCH = 500

_FILES = OUTPUT_FILES
_T = _FILES.c
#: Every file row of the prediction ``p_prediction_id``, by output path (built once).
_FILES_OF = (
    select(*FILE_COLUMNS).where(_T.prediction_id == bindparam("p_prediction_id")).order_by(_T.output_path)
)


def _files_of(s: Connection, prediction_id: str) -> list[FileRecord]:
    return [FileRecord(**r._mapping) for r in s.execute(_FILES_OF, {"p_prediction_id": prediction_id})]


_ALIASES = SOURCE_URLS
#: Statuses of a file whose prediction is deleted (or being deleted).
DELETED_STATUSES = (FileStatus.DELETING, FileStatus.DELETED)


class FileRepository:
    """Named queries over ``output_files`` (as records) and ``source_urls``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # built once: executed many rows at a time with parameters
        self._insert_files = db.insert(_FILES).on_conflict_do_nothing(index_elements=self._file_conflict())
        self._insert_alias = db.insert(_ALIASES).on_conflict_do_nothing(index_elements=self._alias_conflict())

    def _file_conflict(self) -> list[Any]:
        if self.db.dialect == "postgresql":  # the unique index is on md5(output_path) there
            return [_T.prediction_id, func.md5(_T.output_path)]
        return ["prediction_id", "output_path"]

    def _alias_conflict(self) -> list[Any]:
        if self.db.dialect == "postgresql":
            return [_ALIASES.c.output_file_id, func.md5(_ALIASES.c.url)]
        return ["output_file_id", "url"]

    def _insert_aliases(self, s: Connection, aliases: Sequence[dict[str, Any]]) -> None:
        for chunk in chunked(aliases):
            s.execute(self._insert_alias, list(chunk))

    def ensure(
        self,
        prediction_id: str,
        files: Sequence[NewFile],
        *,
        store: str,
        model: str | None,
        created_at: datetime | None,
        prediction: PredictionIn | None = None,
        rerun_of: str | None = None,
    ) -> list[FileRecord]:
        """Record each file as ``pending`` unless a row for its output path exists (and,
        with ``prediction``, the prediction first, in the same transaction); returns every
        file row of the prediction by output path. See :meth:`ensure_and_claim`."""
        rows, _ = self.ensure_and_claim(
            prediction_id,
            files,
            store=store,
            model=model,
            created_at=created_at,
            prediction=prediction,
            rerun_of=rerun_of,
        )
        return rows

    def ensure_and_claim(
        self,
        prediction_id: str,
        files: Sequence[NewFile],
        *,
        store: str,
        model: str | None,
        created_at: datetime | None,
        prediction: PredictionIn | None = None,
        rerun_of: str | None = None,
        claim_for: tuple[str, float] | None = None,
    ) -> tuple[list[FileRecord], set[int]]:
        """Record each file as ``pending`` unless a row for its output path exists; with
        ``prediction`` (whose id is ``prediction_id``), record it first in the same
        transaction (:meth:`PredictionRepository.record
        <cachelayer.catalog.predictions.PredictionRepository.record>`, ``rerun_of`` as there).

        An existing row whose source URL changed (Replicate rotated it) gets the new URL
        unless it is stored; every URL is remembered in ``source_urls``. Any number of files
        (inserted 1,000 rows per statement, in one transaction). Returns every file row of
        the prediction, ordered by output path. Raises
        :class:`~cachelayer.errors.CatalogWriteError` (nothing written),
        :class:`~cachelayer.errors.PredictionDeletedError` (a deleted prediction: nothing
        written) and :class:`~cachelayer.errors.CatalogOutageError`.

        ``claim_for`` ``(owner, lease_seconds)``: in the same transaction, claim the files
        that are not stored and not leased by another (:func:`claim_prediction_files
        <cachelayer.catalog.claims.claim_prediction_files>`). Returns the rows (claimed ones
        as claimed) and the ids claimed.
        """
        check_prediction_id(prediction_id, model)
        wanted = [(f.output_path, catalog_url(f.source_url), f.key) for f in files]

        def work(s: Connection) -> tuple[list[FileRecord], set[int]]:
            if prediction is None:  # record_in refuses a deleted prediction itself
                refuse_deleted_in(s, prediction_id)
            else:
                record_in(s, self.db, prediction, rerun_of=rerun_of)
            now = utcnow()
            new = [
                {
                    "prediction_id": prediction_id,
                    "output_path": path,
                    "source_url": url,
                    "store": store,
                    "key": key,
                    "status": FileStatus.PENDING,
                    "attempts": 0,
                    "model": model,
                    "created_at": created_at,
                    "available_at": now,
                }
                for path, url, key in wanted
            ]
            for chunk in chunked(new):  # executemany of one statement, compiled once
                s.execute(self._insert_files, list(chunk))
            # Core rows, not ORM objects: no identity map or flush for a scan's many files
            rows = _files_of(s, prediction_id)
            by_path = {r.output_path: i for i, r in enumerate(rows)}
            aliases = []
            for path, url, _key in wanted:
                i = by_path.get(path)
                if i is None:  # only an MD5 collision of two paths gets here (PostgreSQL)
                    raise CatalogWriteError(f"output path {path[:80]!r} collides with another (MD5)")
                row = rows[i]
                if row.source_url != url and row.status not in NO_COPY:
                    s.execute(update(_FILES).where(_T.id == row.id).values(source_url=url))
                    rows[i] = replace(row, source_url=url)
                aliases.append({"output_file_id": row.id, "url": url, "seen_at": now})
            self._insert_aliases(s, aliases)
            if claim_for is None:
                return rows, set()
            claimed = {r.id: r for r in claim_prediction_files(s, prediction_id, *claim_for)}
            return [claimed.get(r.id, r) for r in rows], set(claimed)

        return self.db.write_core(work, prediction_id=prediction_id)

    def add_source_url(self, file_id: int, url: str) -> None:
        """Remember another URL (a refreshed one) the file was served from; it becomes the
        row's ``source_url`` unless the file is stored."""
        recorded = catalog_url(url)

        def work(s: Connection) -> None:
            self._insert_aliases(s, [{"output_file_id": file_id, "url": recorded, "seen_at": utcnow()}])
            unstored = (_T.id == file_id) & _T.status.not_in(NO_COPY)
            s.execute(update(_FILES).where(unstored).values(source_url=recorded))

        self.db.write_core(work)

    def get(self, file_id: int) -> FileRecord | None:
        """One file row by id."""

        def work(s: Connection) -> FileRecord | None:
            row = s.execute(select(*FILE_COLUMNS).where(_T.id == file_id)).first()
            return FileRecord(**row._mapping) if row is not None else None

        return self.db.read(work)

    def stored_by_key(self, key: str) -> FileRecord | None:
        """The ``stored`` file with object key ``key``, in whichever store it was written to
        (its ``store``), or ``None``: the gateway's lookup (index ``ix_output_files_key``).
        Retried and reported as every read (:meth:`Database.read`)."""

        def work(s: Connection) -> FileRecord | None:
            row = s.execute(
                select(*FILE_COLUMNS)
                .where(_T.key == key, _T.status == FileStatus.STORED)
                .order_by(_T.id)
                .limit(1)
            ).first()
            return FileRecord(**row._mapping) if row is not None else None

        return self.db.read(work)

    def deleted_by_key(self, key: str) -> bool:
        """Whether a file with object key ``key`` was deleted (or is being deleted) and no
        stored one has it: the gateway's ``410 Gone`` (after :meth:`stored_by_key` missed)."""
        stmt = select(_T.id).where(_T.key == key, _T.status.in_(DELETED_STATUSES)).limit(1)
        return self.db.read(lambda s: s.execute(stmt).first() is not None)

    def of_prediction(self, prediction_id: str) -> list[FileRecord]:
        """Every file row of a prediction, ordered by output path."""
        return self.db.read(lambda s: _files_of(s, prediction_id))

    def resolve(self, url: str) -> FileRecord | None:
        """The stored file that ``url`` (current or any earlier source URL, or a ``data:``
        URI) was copied into, or ``None`` (see :meth:`resolve_many`)."""
        return self.resolve_many([url])[url]

    def resolve_many(self, urls: Iterable[str]) -> dict[str, FileRecord | None]:
        """For each URL (a current or earlier source URL, or a ``data:`` URI) the stored file
        copied from it, or ``None`` if no stored file was ever served from it. Unknown URLs
        are reported as ``None``, never guessed.

        Keys are the given URLs in input order (duplicates collapse). Lookups are batched
        (:data:`RESOLVE_BATCH` URLs per statement: first ``output_files.source_url``, then
        the ``source_urls`` aliases for the rest); when several stored files share a URL
        (identical ``data:`` URIs) the oldest row (lowest id) wins.
        """
        wanted = {url: catalog_url(url) for url in urls}
        keys = list(dict.fromkeys(wanted.values()))
        alias = _ALIASES.c

        # The status test is applied here, not in SQL: with ``status = 'stored'`` in the
        # WHERE clause SQLite (without ANALYZE statistics) drives the query from the
        # (status, available_at) index and scans every stored row instead of looking the
        # URLs up. Rows per URL are ~1, so filtering afterwards costs nothing.
        def work(s: Connection) -> dict[str, FileRecord]:
            found: dict[str, FileRecord] = {}
            for chunk in chunked(keys, RESOLVE_BATCH):
                rows = s.execute(select(*FILE_COLUMNS).where(_T.source_url.in_(chunk)).order_by(_T.id)).all()
                for r in rows:
                    if r.status == FileStatus.STORED:
                        found.setdefault(r.source_url, FileRecord(**r._mapping))
                rest = [k for k in chunk if k not in found]
                if not rest:
                    continue
                rows = s.execute(
                    select(alias.url, *FILE_COLUMNS)
                    .join_from(_ALIASES, OUTPUT_FILES, alias.output_file_id == _T.id)
                    .where(alias.url.in_(rest))
                    .order_by(_T.id)
                ).all()
                for r in rows:
                    data = dict(r._mapping)
                    url = data.pop("url")
                    if data["status"] == FileStatus.STORED:
                        found.setdefault(url, FileRecord(**data))
            return found

        found = self.db.read(work)
        return {url: found.get(key) for url, key in wanted.items()}
