"""Each file's copies in the mirror stores (table ``file_copies``) and the mirror queue.

A file's primary copy is its ``output_files`` row (``store``, ``key``). Every mirror store
(``CACHELAYER_MIRROR_URLS``) gets one ``file_copies`` row per stored file: ``pending``
until a worker has copied the primary object there and checked its sha256, then
``stored``; a failure goes back to ``pending`` with a backoff (``available_at``) and the
error. Claims are leases (``lease_owner``, ``lease_expires_at``) taken by a conditional
``UPDATE`` of one row, so several processes split the queue on SQLite and PostgreSQL and a
dead process's claim lapses. Every statement runs through the catalog's
:class:`~cachelayer.catalog.session.Database` (retried, typed errors).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, exists, func, or_, select, update

from cachelayer.catalog.models import FILE_COLUMNS, FILE_COPIES, OUTPUT_FILES
from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.catalog.session import Database, chunked, utcnow

__all__ = ["CopyRecord", "CopyRepository", "MirrorTask"]

_C = FILE_COPIES.c
_F = OUTPUT_FILES.c
#: ids per ``IN (...)`` list (well under SQLite's bound-parameter limit)
_IDS = 500


@dataclass(frozen=True)
class CopyRecord:
    """One file's copy in one mirror store as recorded (``size`` in bytes; ``status`` a
    :class:`FileStatus`: ``pending``, ``stored`` or ``failed``)."""

    id: int
    file_id: int
    store: str
    key: str
    sha256: str | None
    size: int | None
    status: FileStatus
    attempts: int
    error: str | None
    updated_at: datetime | None


_COPY_COLUMNS = [_C[name] for name in CopyRecord.__dataclass_fields__]


@dataclass(frozen=True)
class MirrorTask:
    """A claimed mirror copy (``copy``) and the file it copies (``file``: its primary
    store, key, size, sha256 and content type)."""

    copy: CopyRecord
    file: FileRecord


def _changed(stmt: Any, c: Connection) -> bool:
    return bool(c.execute(stmt).rowcount)


def _copy(row: Any) -> CopyRecord:
    return CopyRecord(**{name: row._mapping[name] for name in CopyRecord.__dataclass_fields__})


class CopyRepository:
    """Named queries over ``file_copies`` (``catalog.copies``). Raises what
    :class:`~cachelayer.catalog.session.Database` raises."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = db.insert(FILE_COPIES).on_conflict_do_nothing(index_elements=["file_id", "store"])

    # ---- queueing ----------------------------------------------------------------------

    def enqueue(self, rows: Sequence[tuple[int, str, str]]) -> int:
        """Queue copies ``(file_id, store, key)`` as ``pending`` unless the file already has
        a row for that store. Returns how many rows are new (idempotent)."""
        if not rows:
            return 0
        now = utcnow()
        values = [
            {
                "file_id": f,
                "store": st,
                "key": k,
                "status": FileStatus.PENDING,
                "attempts": 0,
                "updated_at": now,
            }
            for f, st, k in rows
        ]

        def work(c: Connection) -> int:
            added = 0
            for chunk in chunked(values, _IDS):
                added += len(c.execute(self._insert.returning(_C.id), list(chunk)).all())
            return added

        return self.db.write_core(work)

    def unqueued(self, store: str, *, after_id: int = 0, limit: int = 500) -> list[FileRecord]:
        """``stored`` files with no ``file_copies`` row for ``store``, by id above
        ``after_id`` (keyset: call again with the last id until empty). What a crash between
        storing a primary copy and queueing its mirrors left behind, or a catalog older than
        the mirror."""
        stmt = (
            select(*FILE_COLUMNS)
            .where(
                _F.status == FileStatus.STORED,
                _F.id > after_id,
                ~exists().where(_C.file_id == _F.id, _C.store == store),
            )
            .order_by(_F.id)
            .limit(limit)
        )
        return self.db.read(lambda s: [FileRecord(**r._mapping) for r in s.execute(stmt)])

    # ---- claims and outcomes ---------------------------------------------------------------

    def claim(self, stores: Sequence[str], owner: str, lease_seconds: float, limit: int) -> list[MirrorTask]:
        """Claim up to ``limit`` pending copies into ``stores`` whose backoff is over and
        whose file is ``stored``: each is leased to ``owner`` for ``lease_seconds`` and its
        ``attempts`` counted. Oldest first."""
        if not stores or limit <= 0:
            return []
        now = utcnow()
        free = [
            _C.status == FileStatus.PENDING,
            _C.store.in_(list(stores)),
            or_(_C.lease_expires_at.is_(None), _C.lease_expires_at < now),
            or_(_C.available_at.is_(None), _C.available_at <= now),
        ]
        candidates = (
            select(_C.id)
            .join(OUTPUT_FILES, _F.id == _C.file_id)
            .where(*free, _F.status == FileStatus.STORED)
            .order_by(_C.id)
            .limit(limit)
        )
        ids = self.db.read(lambda s: [r[0] for r in s.execute(candidates)])
        lease = now + timedelta(seconds=lease_seconds)
        taken: list[int] = []
        for copy_id in ids:
            take = (
                update(FILE_COPIES)
                .where(_C.id == copy_id, *free)
                .values(lease_owner=owner, lease_expires_at=lease, attempts=_C.attempts + 1, updated_at=now)
            )
            if self.db.write_core(partial(_changed, take)):
                taken.append(copy_id)
        if not taken:
            return []
        stmt = (
            select(*_COPY_COLUMNS, *[col.label(f"f_{col.name}") for col in FILE_COLUMNS])
            .join(OUTPUT_FILES, _F.id == _C.file_id)
            .where(_C.id.in_(taken))
            .order_by(_C.id)
        )

        def read(s: Connection) -> list[MirrorTask]:
            out = []
            for r in s.execute(stmt):
                m = r._mapping
                file = FileRecord(**{f: m[f"f_{f}"] for f in FileRecord.__dataclass_fields__})
                out.append(MirrorTask(_copy(r), file))
            return out

        return self.db.read(read)

    def mark_stored(self, copy_id: int, *, sha256: str, size: int) -> None:
        """The copy is in its store with these bytes (checked): ``stored``, lease dropped."""
        self._set(copy_id, status=FileStatus.STORED, sha256=sha256, size=size, error=None, available_at=None)

    def mark_unstored(self, copy_id: int, *, error: str, retry_after: float | None) -> None:
        """The copy failed: back to ``pending`` after ``retry_after`` seconds, or ``failed``
        for good (``retry_after`` ``None``), with ``error``; lease dropped."""
        status = FileStatus.PENDING if retry_after is not None else FileStatus.FAILED
        later = utcnow() + timedelta(seconds=retry_after) if retry_after is not None else None
        self._set(copy_id, status=status, error=error[:2000], available_at=later)

    def requeue(self, copy_id: int, *, error: str) -> None:
        """Put a copy back in the queue at once (``pending``, attempts reset): verify found
        it missing or corrupt and could not restore it now."""
        self._set(copy_id, status=FileStatus.PENDING, error=error, available_at=None, attempts=0)

    def _set(self, copy_id: int, **values: Any) -> None:
        stmt = (
            update(FILE_COPIES)
            .where(_C.id == copy_id)
            .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **values)
        )
        self.db.write_core(lambda c: c.execute(stmt))

    def retry_failed(self, stores: Sequence[str]) -> int:
        """Put ``failed`` copies into ``stores`` back in the queue and end the backoff of
        pending ones (attempts reset). Returns how many rows changed."""
        stmt = (
            update(FILE_COPIES)
            .where(_C.status.in_([FileStatus.FAILED, FileStatus.PENDING]), _C.store.in_(list(stores)))
            .values(status=FileStatus.PENDING, attempts=0, available_at=None, updated_at=utcnow())
        )
        return int(self.db.write_core(lambda c: c.execute(stmt).rowcount))

    # ---- reads ---------------------------------------------------------------------------

    def of_files(self, file_ids: Iterable[int]) -> dict[int, list[CopyRecord]]:
        """Every recorded mirror copy of the files ``file_ids``, by file id (store order)."""
        ids = sorted(set(file_ids))
        out: dict[int, list[CopyRecord]] = {}

        def work(s: Connection) -> None:
            for chunk in chunked(ids, _IDS):
                stmt = select(*_COPY_COLUMNS).where(_C.file_id.in_(chunk)).order_by(_C.file_id, _C.id)
                for r in s.execute(stmt):
                    rec = _copy(r)
                    out.setdefault(rec.file_id, []).append(rec)

        self.db.read(work)
        return out

    def of_predictions(self, prediction_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Every recorded copy ``(store, key)`` of the files of ``prediction_ids``: each
        file's primary copy (its ``output_files`` row, whatever its status: removing an
        object that was never written is harmless) and each of its mirror copies. What a
        delete must remove. Distinct pairs, primary copies first."""
        ids = sorted(set(prediction_ids))
        pairs: list[tuple[str, str]] = []

        def work(s: Connection) -> None:
            for chunk in chunked(ids, _IDS):
                primary = select(_F.store, _F.key).where(_F.prediction_id.in_(chunk)).order_by(_F.id)
                pairs.extend((r[0], r[1]) for r in s.execute(primary))
            for chunk in chunked(ids, _IDS):
                mirror = (
                    select(_C.store, _C.key)
                    .join(OUTPUT_FILES, _F.id == _C.file_id)
                    .where(_F.prediction_id.in_(chunk))
                    .order_by(_C.id)
                )
                pairs.extend((r[0], r[1]) for r in s.execute(mirror))

        self.db.read(work)
        return list(dict.fromkeys(pairs))

    def counts(self, stores: Sequence[str] | None = None) -> dict[str, int]:
        """Copies by status (``{"pending": 3, "stored": 10}``), of ``stores`` (``None``: all)."""
        stmt = select(_C.status, func.count()).group_by(_C.status)
        if stores is not None:
            stmt = stmt.where(_C.store.in_(list(stores)))
        return self.db.read(lambda s: {str(r[0]): int(r[1]) for r in s.execute(stmt)})

    def leased(self, stores: Sequence[str], owner: str) -> int:
        """Pending copies into ``stores`` that ``owner`` holds under a lease that has not
        lapsed (a thread of that process is copying them)."""
        now = utcnow()
        stmt = select(func.count()).where(
            _C.status == FileStatus.PENDING,
            _C.store.in_(list(stores)),
            _C.lease_owner == owner,
            _C.lease_expires_at >= now,
        )
        return int(self.db.read(lambda s: s.execute(stmt).scalar_one()))
