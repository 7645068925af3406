"""The ``tombstones`` table and the catalog's half of deleting a prediction.

A delete (:mod:`cachelayer.delete`) runs in three steps, each safe to stop at (kill -9)
and to run again:

1. :meth:`TombstoneRepository.begin`, one transaction: a tombstone row with
   ``deleted_at NULL`` (the prediction is now refused by every writer:
   :func:`refuse_deleted_in`), each of its files ``deleting`` (their rows keep store and
   key: they still say where the objects are), its recorded input, output and durable
   output erased.
2. the objects are removed from each file's store (not here: the catalog moves no bytes).
3. :meth:`TombstoneRepository.finish`, one transaction: once no file of it is in another
   status and no live lease holds one (a copy in flight), its files become ``deleted``
   (``sha256`` cleared), the tombstone gets ``deleted_at``, files and bytes freed, and the
   input and output are erased once more (a writer whose refusal check ran just before
   step 1 committed may have written them back: PostgreSQL, READ COMMITTED).

So there is never an object whose row is gone, nor a ``stored`` row whose object is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, or_, select, update

from cachelayer.catalog.models import FILE_COLUMNS, FILE_COPIES, OUTPUT_FILES, PREDICTIONS, TOMBSTONES
from cachelayer.catalog.records import FileRecord, FileStatus, iso
from cachelayer.catalog.session import Database, chunked, utcnow
from cachelayer.errors import PredictionDeletedError

__all__ = ["DeleteCandidate", "TombstoneRecord", "TombstoneRepository", "refuse_deleted_in"]

#: Ids per statement (well under SQLite's bound-parameter limit).
ID_BATCH = 500

_TOMBS = TOMBSTONES
_B = _TOMBS.c
_FILES = OUTPUT_FILES
_F = _FILES.c
_PREDS = PREDICTIONS
_P = _PREDS.c
_C = FILE_COPIES.c
_GONE = (FileStatus.DELETING, FileStatus.DELETED)
#: What a delete erases of the prediction's row (add ``.where(...)``).
_ERASE = update(_PREDS).values(input=None, output=None, durable_output=None, updated_at=bindparam("p_now"))


@dataclass(frozen=True)
class TombstoneRecord:
    """What stays of a deleted prediction: ``deleted_at`` is ``None`` while the delete is
    under way; ``files`` and ``bytes_freed`` (bytes) count the files deleted."""

    prediction_id: str
    model: str | None
    reason: str | None
    requested_at: datetime
    deleted_at: datetime | None
    files: int
    bytes_freed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (times as ISO 8601 UTC)."""
        d = dict(self.__dict__)
        d["requested_at"], d["deleted_at"] = iso(self.requested_at), iso(self.deleted_at)
        return d


@dataclass(frozen=True)
class DeleteCandidate:
    """A prediction a delete would touch: its files (every row) and the bytes its stored
    ones hold (recorded sizes)."""

    prediction_id: str
    model: str | None
    files: list[FileRecord]

    @property
    def stored_bytes(self) -> int:
        """Bytes of the files that were stored (``stored_at`` set), as recorded."""
        return sum(f.size or 0 for f in self.files if f.stored_at is not None)


def refuse_deleted_in(c: Connection, prediction_id: str) -> None:
    """Inside the caller's transaction: raise
    :class:`~cachelayer.errors.PredictionDeletedError` when ``prediction_id`` has a
    tombstone (deleted, or being deleted). Every writer that records or queues a
    prediction calls it first (``record_in``, ``FileRepository.ensure_and_claim``)."""
    if c.execute(select(_B.prediction_id).where(_B.prediction_id == prediction_id)).first() is not None:
        raise PredictionDeletedError(prediction_id)


def _tomb(row: Any) -> TombstoneRecord:
    return TombstoneRecord(**{k: getattr(row, k) for k in TombstoneRecord.__dataclass_fields__})


class TombstoneRepository:
    """Named queries over ``tombstones`` and the catalog steps of a delete."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get_many(self, prediction_ids: Iterable[str]) -> dict[str, TombstoneRecord]:
        """The tombstones among ``prediction_ids`` (others are absent)."""
        ids = list(dict.fromkeys(prediction_ids))

        def work(c: Connection) -> dict[str, TombstoneRecord]:
            found = {}
            for chunk in chunked(ids, ID_BATCH):
                for row in c.execute(select(_TOMBS).where(_B.prediction_id.in_(chunk))):
                    found[row.prediction_id] = _tomb(row)
            return found

        return self.db.read(work)

    def candidates(self, prediction_ids: Sequence[str]) -> dict[str, DeleteCandidate]:
        """The recorded predictions among ``prediction_ids`` with every file row (unknown
        ids are absent): what a delete would touch. Reads only."""

        def work(c: Connection) -> dict[str, DeleteCandidate]:
            found: dict[str, DeleteCandidate] = {}
            for chunk in chunked(list(prediction_ids), ID_BATCH):
                for pid, model in c.execute(select(_P.id, _P.model).where(_P.id.in_(chunk))):
                    found[pid] = DeleteCandidate(pid, model, [])
                rows = c.execute(select(*FILE_COLUMNS).where(_F.prediction_id.in_(chunk)).order_by(_F.id))
                for r in rows:
                    found[r.prediction_id].files.append(FileRecord(**r._mapping))
            return found

        return self.db.read(work)

    def begin(self, prediction_ids: Sequence[str], reason: str | None) -> dict[str, list[FileRecord]]:
        """Step 1 of a delete, one transaction: for each recorded prediction among
        ``prediction_ids`` whose delete has not finished, a tombstone (``deleted_at NULL``;
        a ``reason`` given again replaces the first), its files not yet ``deleted`` set
        ``deleting``, its input, output and durable output erased. Returns ``{id: its
        files now deleting}`` for those (the objects to remove); unknown and finished ids
        are absent. Idempotent."""
        now = utcnow()

        def work(c: Connection) -> dict[str, list[FileRecord]]:
            todo: dict[str, list[FileRecord]] = {}
            for chunk in chunked(list(dict.fromkeys(prediction_ids)), ID_BATCH):
                done = set(
                    c.scalars(
                        select(_B.prediction_id).where(
                            _B.prediction_id.in_(chunk), _B.deleted_at.is_not(None)
                        )
                    )
                )
                rows = c.execute(select(_P.id, _P.model).where(_P.id.in_(chunk)))
                preds = {pid: model for pid, model in rows if pid not in done}
                if not preds:
                    continue
                ids = list(preds)
                had = set(c.scalars(select(_B.prediction_id).where(_B.prediction_id.in_(ids))))
                new = [
                    {
                        "prediction_id": p,
                        "model": preds[p],
                        "reason": reason,
                        "requested_at": now,
                        "deleted_at": None,
                        "files": 0,
                        "bytes_freed": 0,
                    }
                    for p in ids
                    if p not in had
                ]
                if new:
                    c.execute(_TOMBS.insert(), new)
                if reason is not None and had:
                    c.execute(update(_TOMBS).where(_B.prediction_id.in_(had)).values(reason=reason))
                c.execute(
                    update(_FILES)
                    .where(_F.prediction_id.in_(ids), _F.status != FileStatus.DELETED)
                    .values(status=FileStatus.DELETING)
                )
                c.execute(_ERASE.where(_P.id.in_(ids)), {"p_now": now})
                for p in ids:
                    todo[p] = []
                deleting = select(*FILE_COLUMNS).where(
                    _F.prediction_id.in_(ids), _F.status == FileStatus.DELETING
                )
                for r in c.execute(deleting.order_by(_F.id)):
                    todo[r.prediction_id].append(FileRecord(**r._mapping))
            return todo

        return self.db.write_core(work)

    def finish(self, prediction_ids: Sequence[str]) -> dict[str, TombstoneRecord]:
        """Step 3 of a delete, one transaction: for each id whose tombstone is unfinished
        and whose files are all ``deleting``/``deleted`` with no live lease, theirs or a
        mirror copy's (no copy in flight that could still write an object), files become
        ``deleted`` (``sha256``, lease cleared), their mirror copies' rows go and the
        tombstone gets ``deleted_at`` now, ``files`` and ``bytes_freed`` (recorded sizes of
        the files that had been stored). Returns the finished tombstones; ids left out stay
        unfinished (run the delete again)."""
        now = utcnow()

        def work(c: Connection) -> dict[str, TombstoneRecord]:
            finished: dict[str, TombstoneRecord] = {}
            for chunk in chunked(list(dict.fromkeys(prediction_ids)), ID_BATCH):
                open_ = list(
                    c.scalars(
                        select(_B.prediction_id).where(_B.prediction_id.in_(chunk), _B.deleted_at.is_(None))
                    )
                )
                if not open_:
                    continue
                mirroring = exists(
                    select(_C.id).where(
                        _C.file_id == _F.id,
                        _C.lease_expires_at.is_not(None),
                        _C.lease_expires_at > now,
                    )
                )
                busy = or_(
                    _F.status.not_in(_GONE),
                    and_(
                        _F.status == FileStatus.DELETING,
                        _F.lease_expires_at.is_not(None),
                        _F.lease_expires_at > now,
                    ),
                    mirroring,  # a mirror copy in flight: the rerun removes what it wrote
                )
                blocked = set(
                    c.scalars(select(_F.prediction_id).where(_F.prediction_id.in_(open_), busy).distinct())
                )
                ready = [p for p in open_ if p not in blocked]
                if not ready:
                    continue
                c.execute(
                    update(_FILES)
                    .where(_F.prediction_id.in_(ready), _F.status == FileStatus.DELETING)
                    .values(status=FileStatus.DELETED, sha256=None, lease_owner=None, lease_expires_at=None)
                )
                # the mirror copies' objects are gone with the primary ones: no row says stored
                gone_files = select(_F.id).where(_F.prediction_id.in_(ready)).scalar_subquery()
                c.execute(delete(FILE_COPIES).where(_C.file_id.in_(gone_files)))
                sums = c.execute(
                    select(
                        _F.prediction_id,
                        func.count(),
                        func.coalesce(func.sum(case((_F.stored_at.is_not(None), _F.size), else_=0)), 0),
                    )
                    .where(_F.prediction_id.in_(ready))
                    .group_by(_F.prediction_id)
                )
                counts = {p: (int(n), int(b)) for p, n, b in sums}
                # again: a writer that raced step 1 (its refusal check before the tombstone
                # committed, its upsert after) cannot leave the input or output behind
                c.execute(_ERASE.where(_P.id.in_(ready)), {"p_now": now})
                for p in ready:
                    n, b = counts.get(p, (0, 0))
                    c.execute(
                        update(_TOMBS)
                        .where(_B.prediction_id == p)
                        .values(deleted_at=now, files=n, bytes_freed=b)
                    )
                for row in c.execute(select(_TOMBS).where(_B.prediction_id.in_(ready))):
                    finished[row.prediction_id] = _tomb(row)
            return finished

        return self.db.write_core(work)

    def unfinished(self, limit: int) -> list[str]:
        """Ids of up to ``limit`` deletes begun and not finished (a process died, a store
        failed, a copy was in flight), oldest first: what a rerun or the sweep finishes."""
        stmt = select(_B.prediction_id).where(_B.deleted_at.is_(None)).order_by(_B.requested_at).limit(limit)
        return self.db.read(lambda c: list(c.scalars(stmt)))

    def older_than(
        self,
        cutoff: datetime,
        *,
        models: Sequence[str] = (),
        statuses: Sequence[str] = (),
        after: str | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Ids of up to ``limit`` recorded predictions created before ``cutoff`` (else
        recorded before it, when Replicate gave no creation time) with no tombstone, of
        ``models`` and prediction ``statuses`` when given, ordered by id after ``after``:
        the retention's candidates (``cachelayer prune``)."""
        conds: list[Any] = [
            func.coalesce(_P.created_at, _P.recorded_at) < cutoff,
            ~exists().where(_B.prediction_id == _P.id),
        ]
        if models:
            conds.append(_P.model.in_(list(models)))
        if statuses:
            conds.append(_P.status.in_(list(statuses)))
        if after is not None:
            conds.append(_P.id > after)
        stmt = select(_P.id).where(*conds).order_by(_P.id).limit(limit)
        return self.db.read(lambda c: list(c.scalars(stmt)))

    def totals(self) -> tuple[int, int]:
        """``(predictions deleted, bytes freed)`` over every finished tombstone (``/metrics``)."""
        stmt = select(func.count(), func.coalesce(func.sum(_B.bytes_freed), 0)).where(
            _B.deleted_at.is_not(None)
        )

        def work(c: Connection) -> tuple[int, int]:
            n, b = c.execute(stmt).one()
            return int(n), int(b)

        return self.db.read(work)
