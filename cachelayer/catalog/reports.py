"""Read queries over the catalog: listings, one prediction, bulk resolve, statistics.

:class:`ReportQueries` is a mixin of :class:`~cachelayer.catalog.queries.Catalog` (it uses
the catalog's ``sessions``, ``engine`` and ``dialect``), so these are reached as
``layer.catalog.list_files(...)`` and friends. Every method returns typed records
(:class:`~cachelayer.catalog.records.FileRecord`, :class:`Page`, :class:`StatsRow`...),
never raw rows. The SQL each one runs is documented for plain-SQL users in
``docs/SCHEMA.md``.

Ordering and pagination. Listings are ordered newest first by ``(created_at, id)`` (the
prediction's creation time, copied onto each file row; ``id`` breaks ties). Files whose
``created_at`` is unknown (``NULL``) sort as the oldest, after every dated file, by ``id``
descending. Pages are cut with a keyset cursor, so page 1,000 costs what page 1 costs:
each page is one range scan of ``ix_output_files_model_created`` (with a model filter)
or ``ix_output_files_created`` (without), never an ``OFFSET``.

Time filters: ``since`` is inclusive, ``until`` exclusive (``since <= created_at <
until``); both are timezone-aware datetimes (naive ones are taken as UTC); files with an
unknown ``created_at`` never match a time filter.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import (
    ColumnElement,
    case,
    func,
    literal,
    select,
    tuple_,
    update,
)

from cachelayer.catalog.models import FILE_STATUSES, OutputFile, Prediction, SourceUrl
from cachelayer.catalog.records import FileRecord, PredictionRecord, iso
from cachelayer.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "CursorError",
    "Page",
    "PredictionFiles",
    "ReportQueries",
    "StatsBy",
    "StatsRow",
    "decode_cursor",
    "encode_cursor",
]

StatsBy = Literal["model", "day", "status"]

#: Most rows one page may hold.
MAX_PAGE_SIZE = 10_000
#: URLs looked up per statement by :meth:`ReportQueries.resolve_many` (stays well under
#: SQLite's 32,766 bound-parameter limit and keeps PostgreSQL plans on the index).
RESOLVE_BATCH = 500

_T = OutputFile.__table__.c
# the columns FileRecord is built from, selected as plain columns (no ORM identity map,
# so export and verify can stream millions of rows)
_FILE_COLUMNS = [_T[name] for name in FileRecord.__dataclass_fields__]


class CursorError(ConfigError):
    """A ``--cursor`` value that this catalog did not hand out (malformed or truncated)."""


@dataclass(frozen=True)
class Page:
    """One page of :meth:`ReportQueries.list_files`: ``files`` newest first, and
    ``next_cursor`` to pass as ``cursor`` for the next page (``None`` on the last page)."""

    files: list[FileRecord]
    next_cursor: str | None


class PredictionFiles(NamedTuple):
    """What :meth:`ReportQueries.show` returns: the prediction and its files (by output
    path). Unpacks as ``prediction, files = catalog.show(pid)``."""

    prediction: PredictionRecord
    files: list[FileRecord]


@dataclass(frozen=True)
class StatsRow:
    """One group of :meth:`ReportQueries.stats`.

    ``by`` is the grouping (``model``, ``day`` or ``status``) and ``group`` its value
    (model name, UTC day ``YYYY-MM-DD``, or status; ``None`` when the model or day is
    unknown). ``files`` counts every file row; ``stored``, ``pending``, ``expired`` and
    ``failed`` count them per status; ``stored_bytes`` sums ``size`` (bytes) of stored
    files only.
    """

    by: str
    group: str | None
    files: int
    stored: int
    pending: int
    expired: int
    failed: int
    stored_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """``{<by>: group, "files": ..., ..., "stored_bytes": ...}`` (stable keys per ``by``)."""
        return {
            self.by: self.group, "files": self.files, "stored": self.stored,
            "pending": self.pending, "expired": self.expired, "failed": self.failed,
            "stored_bytes": self.stored_bytes,
        }


# ---- cursors ------------------------------------------------------------------------------


def encode_cursor(created_at: datetime | None, file_id: int) -> str:
    """The opaque cursor after a file: URL-safe base64 (no padding) of the JSON
    ``[created_at ISO 8601 UTC or null, id]``."""
    raw = json.dumps([iso(created_at), file_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, int]:
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
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise CursorError(
            f"invalid cursor {cursor!r}: pass a next_cursor from a listing") from None


# ---- the queries --------------------------------------------------------------------------


class ReportQueries:
    """The read queries of the catalog (mixed into ``Catalog``)."""

    if TYPE_CHECKING:
        engine: Engine
        sessions: sessionmaker[Session]

        @property
        def dialect(self) -> str: ...

    # ---- listings ---------------------------------------------------------------------

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

        Filters combine with AND: ``model`` (``owner/name``), ``status`` (one of
        ``pending``, ``stored``, ``expired``, ``failed``), ``since <= created_at < until``
        and ``prediction_id``. ``limit`` is the page size (1..10,000). ``cursor`` is the
        ``next_cursor`` of the previous page (opaque; valid across processes and for any
        filters, it only marks a position).

        Raises :class:`ConfigError` for a bad status or limit and :class:`CursorError`
        for a malformed cursor.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ConfigError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        after = decode_cursor(cursor) if cursor else None
        filters = _filters(model, status, since, until, prediction_id)
        rows = self._page(filters, after, limit + 1, allow_undated=since is None and until is None)
        files = [FileRecord(**r._mapping) for r in rows]
        if len(files) > limit:
            files = files[:limit]
            last = files[-1]
            return Page(files, encode_cursor(last.created_at, last.id))
        return Page(files, None)

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
        """Every matching file, newest first (same filters and order as :meth:`list_files`).

        Streams: rows are read in keyset pages of ``batch_size``, each in its own short
        transaction, so memory stays flat and no lock is held between pages. Files added
        while iterating appear only if they sort after the current position.
        """
        filters = _filters(model, status, since, until, prediction_id)
        undated = since is None and until is None
        after: tuple[datetime | None, int] | None = None
        while True:
            rows = self._page(filters, after, batch_size, allow_undated=undated)
            for r in rows:
                yield FileRecord(**r._mapping)
            if len(rows) < batch_size:
                return
            last = rows[-1]
            after = (last.created_at, last.id)

    def _page(self, filters: list[ColumnElement[bool]], after: tuple[datetime | None, int] | None,
              n: int, *, allow_undated: bool) -> Sequence[Any]:
        """Up to ``n`` rows after ``after`` in (created_at DESC, id DESC) order, NULL
        created_at last. Two range scans, each matching an index's order exactly: the
        dated rows (backward scan of ``(…, created_at, id)``), then the undated ones."""
        base = select(*_FILE_COLUMNS).where(*filters)
        rows: list[Any] = []
        with self.sessions() as s:
            if after is None or after[0] is not None:
                q = base.where(_T.created_at.is_not(None))
                if after is not None:
                    q = q.where(tuple_(_T.created_at, _T.id) < tuple_(
                        literal(after[0], OutputFile.created_at.type), literal(after[1])))
                q = q.order_by(_T.created_at.desc(), _T.id.desc()).limit(n)
                rows.extend(s.execute(q).all())
            if len(rows) < n and allow_undated:
                q = base.where(_T.created_at.is_(None))
                if after is not None and after[0] is None:
                    q = q.where(_T.id < after[1])
                q = q.order_by(_T.id.desc()).limit(n - len(rows))
                rows.extend(s.execute(q).all())
        return rows

    # ---- one prediction ---------------------------------------------------------------

    def show(self, prediction_id: str) -> PredictionFiles | None:
        """The recorded prediction (input, raw and durable output) and every one of its
        file rows ordered by output path; ``None`` if the prediction is not recorded."""
        with self.sessions() as s:
            row = s.get(Prediction, prediction_id)
            if row is None:
                return None
            pred = PredictionRecord.of(row)
            files = s.execute(
                select(*_FILE_COLUMNS).where(_T.prediction_id == prediction_id)
                .order_by(_T.output_path)
            ).all()
            return PredictionFiles(pred, [FileRecord(**r._mapping) for r in files])

    def predictions_by_id(self, prediction_ids: Iterable[str]) -> dict[str, PredictionRecord]:
        """The recorded predictions among ``prediction_ids`` (unknown ids are absent)."""
        ids = list(dict.fromkeys(prediction_ids))
        found: dict[str, PredictionRecord] = {}
        with self.sessions() as s:
            for i in range(0, len(ids), RESOLVE_BATCH):
                for row in s.scalars(select(Prediction).where(
                        Prediction.id.in_(ids[i:i + RESOLVE_BATCH]))):
                    found[row.id] = PredictionRecord.of(row)
        return found

    # ---- resolve ----------------------------------------------------------------------

    def resolve_many(self, urls: Iterable[str]) -> dict[str, FileRecord | None]:
        """Bulk :meth:`~cachelayer.catalog.queries.Catalog.resolve`: for each URL (a
        current or earlier source URL, or a ``data:`` URI) the stored file copied from it,
        or ``None`` if no stored file was ever served from it. Unknown URLs are reported
        as ``None``, never guessed.

        Keys are the given URLs in input order (duplicates collapse). Lookups are batched
        (:data:`RESOLVE_BATCH` URLs per statement: first ``output_files.source_url``, then
        the ``source_urls`` aliases for the rest); when several stored files share a URL
        (identical ``data:`` URIs) the oldest row (lowest id) wins.
        """
        from cachelayer.catalog.queries import catalog_url

        wanted = {url: catalog_url(url) for url in urls}
        keys = list(dict.fromkeys(wanted.values()))
        found: dict[str, FileRecord] = {}
        aliases = SourceUrl.__table__
        alias = aliases.c
        # The status test is applied here, not in SQL: with ``status = 'stored'`` in the
        # WHERE clause SQLite (without ANALYZE statistics) drives the query from the
        # (status, available_at) index and scans every stored row instead of looking the
        # URLs up. Rows per URL are ~1, so filtering afterwards costs nothing.
        with self.sessions() as s:
            for i in range(0, len(keys), RESOLVE_BATCH):
                chunk = keys[i:i + RESOLVE_BATCH]
                rows = s.execute(
                    select(*_FILE_COLUMNS).where(_T.source_url.in_(chunk)).order_by(_T.id)
                ).all()
                for r in rows:
                    if r.status == "stored":
                        found.setdefault(r.source_url, FileRecord(**r._mapping))
                rest = [k for k in chunk if k not in found]
                if not rest:
                    continue
                rows = s.execute(
                    select(alias.url, *_FILE_COLUMNS)
                    .join_from(aliases, OutputFile.__table__, alias.output_file_id == _T.id)
                    .where(alias.url.in_(rest))
                    .order_by(_T.id)
                ).all()
                for r in rows:
                    data = dict(r._mapping)
                    url = data.pop("url")
                    if data["status"] == "stored":
                        found.setdefault(url, FileRecord(**data))
        return {url: found.get(key) for url, key in wanted.items()}

    # ---- statistics -------------------------------------------------------------------

    def stats(self, by: StatsBy = "model", since: datetime | None = None,
              until: datetime | None = None) -> list[StatsRow]:
        """File counts per status and bytes stored, grouped ``by`` model, UTC day of the
        prediction's creation, or status, over files with ``since <= created_at < until``.

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

        def count(status: str) -> ColumnElement[Any]:
            return func.coalesce(func.sum(case((_T.status == status, 1), else_=0)), 0)

        q = (
            select(
                key.label("grp"),
                func.count().label("files"),
                *[count(st).label(st) for st in FILE_STATUSES],
                func.coalesce(func.sum(case((_T.status == "stored", _T.size))), 0)
                .label("stored_bytes"),
            )
            .where(*_filters(None, None, since, until, None))
            .group_by(key)
        )
        with self.sessions() as s:
            rows = s.execute(q).all()
        result = [
            StatsRow(by, None if r.grp is None else str(r.grp), int(r.files), int(r.stored),
                     int(r.pending), int(r.expired), int(r.failed), int(r.stored_bytes))
            for r in rows
        ]
        order = {st: i for i, st in enumerate(FILE_STATUSES)}

        def sort_key(row: StatsRow) -> tuple[int, Any]:
            if row.group is None:
                return (2, "")
            if by == "status":
                return (0, order.get(row.group, len(order)))
            return (0, row.group)

        return sorted(result, key=sort_key)

    def _day(self, column: Any) -> ColumnElement[Any]:
        """``YYYY-MM-DD`` of a UTC timestamp column, in this dialect's SQL."""
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        # SQLite stores UTC as text 'YYYY-MM-DD HH:MM:SS.ffffff'
        return func.substr(column, 1, 10)

    # ---- verify support ---------------------------------------------------------------

    def mark_unverified(self, file_id: int, *, status: str, error: str,
                        expected_sha256: str | None = None) -> bool:
        """Take a stored file whose object failed verification out of ``stored``:
        ``status`` ``pending`` (re-queued: available now, lease cleared, so the backfill
        worker or ``persist`` copies it again) or ``failed``; ``error`` goes to
        ``last_error``. Only a row still ``stored`` (and, if given, still recording
        ``expected_sha256``) changes, so a concurrent re-copy is not undone. Nothing is
        deleted. Returns whether the row changed.
        """
        if status not in ("pending", "failed"):
            raise ValueError(f"status must be pending or failed, got {status!r}")
        conds = [OutputFile.id == file_id, OutputFile.status == "stored"]
        if expected_sha256 is not None:
            conds.append(OutputFile.sha256 == expected_sha256)
        now = datetime.now(timezone.utc)
        with self.sessions.begin() as s:
            result = s.execute(
                update(OutputFile).where(*conds)
                .values(status=status, last_error=error[:2000], lease_owner=None,
                        lease_expires_at=None, available_at=now)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]


def _filters(model: str | None, status: str | None, since: datetime | None,
             until: datetime | None, prediction_id: str | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if model is not None:
        conds.append(_T.model == model)
    if status is not None:
        if status not in FILE_STATUSES:
            raise ConfigError(f"status must be one of {', '.join(FILE_STATUSES)}, got {status!r}")
        conds.append(_T.status == status)
    if since is not None:
        conds.append(_T.created_at >= since)
    if until is not None:
        conds.append(_T.created_at < until)
    if prediction_id is not None:
        conds.append(_T.prediction_id == prediction_id)
    return conds
