"""Read queries over the catalog: listings, one prediction, statistics.

:class:`ReportRepository` is reached as ``catalog.reports`` (and through the documented
``catalog.list_files(...)``, ``iter_files``, ``show``, ``stats``). Every method returns
typed records (:class:`~cachelayer.catalog.records.FileRecord`, :class:`Page`,
:class:`StatsRow`...), never raw rows. The SQL each one runs is documented for plain-SQL
users in ``docs/SCHEMA.md``.

Ordering and pagination. Listings are ordered newest first by ``(created_at, id)`` (the
prediction's creation time, copied onto each file row; ``id`` breaks ties). Files whose
``created_at`` is unknown (``NULL``) sort as the oldest, after every dated file, by ``id``
descending. Pages are cut with a keyset cursor, so page 1,000 costs what page 1 costs:
each page is one range scan of ``ix_output_files_model_created`` (with a model filter)
or ``ix_output_files_created`` (without), never an ``OFFSET``.

Filters are a :class:`~cachelayer.catalog.filters.FileFilter`: ``since`` is inclusive,
``until`` exclusive (``since <= created_at < until``); files with an unknown
``created_at`` never match a time filter.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Connection, case, func, literal, select, tuple_

from cachelayer.catalog.filters import FileFilter
from cachelayer.catalog.models import FILE_COLUMNS, OUTPUT_FILES, PREDICTIONS
from cachelayer.catalog.records import FileRecord, FileStatus, PredictionRecord, iso
from cachelayer.catalog.session import Database, by_key
from cachelayer.errors import ConfigError

__all__ = [
    "MAX_PAGE_SIZE",
    "CursorError",
    "Page",
    "PredictionFiles",
    "ReportRepository",
    "StatsBy",
    "StatsRow",
    "decode_cursor",
    "encode_cursor",
]

StatsBy = Literal["model", "day", "status"]

#: Most rows one page may hold.
MAX_PAGE_SIZE = 10_000

_T = OUTPUT_FILES.c
_Position = tuple[datetime | None, int]


class CursorError(ConfigError):
    """A ``--cursor`` value that this catalog did not hand out (malformed or truncated)."""


@dataclass(frozen=True)
class Page:
    """One page of :meth:`ReportRepository.list_files`: ``files`` newest first, and
    ``next_cursor`` to pass as ``cursor`` for the next page (``None`` on the last page)."""

    files: list[FileRecord]
    next_cursor: str | None


class PredictionFiles(NamedTuple):
    """What :meth:`ReportRepository.show` returns: the prediction and its files (by output
    path). Unpacks as ``prediction, files = catalog.show(pid)``."""

    prediction: PredictionRecord
    files: list[FileRecord]


@dataclass(frozen=True)
class StatsRow:
    """One group of :meth:`ReportRepository.stats`.

    ``by`` is the grouping (``model``, ``day`` or ``status``) and ``group`` its value
    (model name, UTC day ``YYYY-MM-DD``, or status; ``None`` when the model or day is
    unknown). ``files`` counts every file row; ``stored``, ``pending``, ``expired`` and
    ``failed`` count them per status; ``stored_bytes`` sums ``size`` (bytes) of stored
    files only; ``deleted`` counts files of deleted predictions, ``deleting`` those whose
    delete is under way.
    """

    by: str
    group: str | None
    files: int
    stored: int
    pending: int
    expired: int
    failed: int
    stored_bytes: int
    deleted: int = 0
    deleting: int = 0

    def to_dict(self) -> dict[str, Any]:
        """``{<by>: group, "files": ..., ..., "stored_bytes": ...}`` (stable keys per ``by``)."""
        return {
            self.by: self.group,
            "files": self.files,
            "stored": self.stored,
            "pending": self.pending,
            "expired": self.expired,
            "failed": self.failed,
            "stored_bytes": self.stored_bytes,
            "deleted": self.deleted,
            "deleting": self.deleting,
        }


# ---- cursors ------------------------------------------------------------------------------


def encode_cursor(created_at: datetime | None, file_id: int) -> str:
    """The opaque cursor after a file: URL-safe base64 (no padding) of the JSON
    ``[created_at ISO 8601 UTC or null, id]``."""
    raw = json.dumps([iso(created_at), file_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Position:
    """Inverse of :func:`encode_cursor`. Raises :class:`CursorError` for anything else."""
    try:
        text = cursor.strip()
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, file_id = json.loads(raw)
        if not isinstance(file_id, int) or isinstance(file_id, bool):
            raise ValueError("id")
        if created is None:
            return None, file_id
        stamp = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            raise ValueError("naive")
        return stamp.astimezone(timezone.utc), file_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError):
        raise CursorError(f"invalid cursor {cursor[:200]!r}: pass a next_cursor from a listing") from None


# ---- the queries --------------------------------------------------------------------------


class ReportRepository:
    """The read queries of the catalog (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def file_totals(self) -> dict[str, tuple[int, int]]:
        """``{status: (files, bytes)}`` over every output file (bytes: the recorded sizes;
        one ``GROUP BY status``, for ``/metrics``). Retried as every read."""

        def work(s: Connection) -> dict[str, tuple[int, int]]:
            total = func.coalesce(func.sum(OUTPUT_FILES.c.size), 0)
            rows = s.execute(
                select(OUTPUT_FILES.c.status, func.count(), total).group_by(OUTPUT_FILES.c.status)
            )
            return {str(status): (int(n), int(size or 0)) for status, n, size in rows}

        return self.db.read(work)

    def list_files(
        self, where: FileFilter | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """One page of output files matching ``where``, newest first by ``(created_at, id)``.

        ``limit`` is the page size (1..10,000). ``cursor`` is the ``next_cursor`` of the
        previous page (opaque; valid across processes and for any filter, it only marks a
        position). Raises :class:`ConfigError` for a bad limit and :class:`CursorError` for
        a malformed cursor.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ConfigError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        flt = where or FileFilter()
        after = decode_cursor(cursor) if cursor else None
        rows = self._page(flt, after, limit + 1)
        files = [FileRecord(**r._mapping) for r in rows]
        if len(files) > limit:
            files = files[:limit]
            last = files[-1]
            return Page(files, encode_cursor(last.created_at, last.id))
        return Page(files, None)

    def iter_files(self, where: FileFilter | None = None, *, batch_size: int = 1000) -> Iterator[FileRecord]:
        """Every file matching ``where``, newest first (same order as :meth:`list_files`).

        Streams: rows are read in keyset pages of ``batch_size``, each in its own short
        transaction (retried on its own after a hiccup), so memory stays flat and no lock is
        held between pages. Files added while iterating appear only if they sort after the
        current position.
        """
        flt = where or FileFilter()
        after: _Position | None = None
        while True:
            rows = self._page(flt, after, batch_size)
            for r in rows:
                yield FileRecord(**r._mapping)
            if len(rows) < batch_size:
                return
            last = rows[-1]
            after = (last.created_at, last.id)

    def _page(self, flt: FileFilter, after: _Position | None, n: int) -> Sequence[Any]:
        """Up to ``n`` rows after ``after`` in (created_at DESC, id DESC) order, NULL
        created_at last. Two range scans, each matching an index's order exactly: the
        dated rows (backward scan of ``(…, created_at, id)``), then the undated ones."""
        base = select(*FILE_COLUMNS).where(*flt.conditions())

        def work(s: Connection) -> list[Any]:
            rows: list[Any] = []
            if after is None or after[0] is not None:
                q = base.where(_T.created_at.is_not(None))
                if after is not None:
                    q = q.where(
                        tuple_(_T.created_at, _T.id)
                        < tuple_(literal(after[0], OUTPUT_FILES.c.created_at.type), literal(after[1]))
                    )
                q = q.order_by(_T.created_at.desc(), _T.id.desc()).limit(n)
                rows.extend(s.execute(q).all())
            if len(rows) < n and not flt.dated_only:
                q = base.where(_T.created_at.is_(None))
                if after is not None and after[0] is None:
                    q = q.where(_T.id < after[1])
                q = q.order_by(_T.id.desc()).limit(n - len(rows))
                rows.extend(s.execute(q).all())
            return rows

        return self.db.read(work)

    def show(self, prediction_id: str) -> PredictionFiles | None:
        """The recorded prediction (input, raw and durable output) and every one of its
        file rows ordered by output path; ``None`` if the prediction is not recorded."""

        def work(s: Connection) -> PredictionFiles | None:
            row = by_key(s, PREDICTIONS, prediction_id)
            if row is None:
                return None
            files = s.execute(
                select(*FILE_COLUMNS).where(_T.prediction_id == prediction_id).order_by(_T.output_path)
            ).all()
            return PredictionFiles(PredictionRecord.of(row), [FileRecord(**r._mapping) for r in files])

        return self.db.read(work)

    def stats(self, by: StatsBy = "model", where: FileFilter | None = None) -> list[StatsRow]:
        """File counts per status and bytes stored over the files matching ``where``,
        grouped ``by`` model, UTC day of the prediction's creation, or status.

        Rows are ordered by group (model name; day oldest first; status in the order
        ``pending, stored, expired, failed``); the unknown group (``None``) comes last.
        The equivalent SQL is in ``docs/SCHEMA.md``. Raises :class:`ConfigError` for an
        unknown ``by``.
        """
        if by == "model":
            key: ColumnElement[Any] = _T.model
        elif by == "status":
            key = _T.status
        elif by == "day":
            key = self._day(_T.created_at)
        else:
            raise ConfigError(f"stats by must be model, day or status, got {by!r}")

        def count(status: FileStatus) -> ColumnElement[Any]:
            return func.coalesce(func.sum(case((_T.status == status, 1), else_=0)), 0)

        q = (
            select(
                key.label("grp"),
                func.count().label("files"),
                *[count(st).label(st.value) for st in FileStatus],
                func.coalesce(func.sum(case((_T.status == FileStatus.STORED, _T.size))), 0).label(
                    "stored_bytes"
                ),
            )
            .where(*(where or FileFilter()).conditions())
            .group_by(key)
        )
        rows = self.db.read(lambda s: s.execute(q).all())
        result = [
            StatsRow(
                by,
                None if r.grp is None else str(r.grp),
                int(r.files),
                int(r.stored),
                int(r.pending),
                int(r.expired),
                int(r.failed),
                int(r.stored_bytes),
                deleted=int(r.deleted),
                deleting=int(r.deleting),
            )
            for r in rows
        ]
        order = {st.value: i for i, st in enumerate(FileStatus)}

        def sort_key(row: StatsRow) -> tuple[int, Any]:
            if row.group is None:
                return (2, "")
            if by == "status":
                return (0, order.get(row.group, len(order)))
            return (0, row.group)

        return sorted(result, key=sort_key)

    def _day(self, column: Any) -> ColumnElement[Any]:
        """``YYYY-MM-DD`` of a UTC timestamp column, in this dialect's SQL."""
        if self.db.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        # SQLite stores UTC as text 'YYYY-MM-DD HH:MM:SS.ffffff'
        return func.substr(column, 1, 10)
