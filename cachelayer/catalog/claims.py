"""The queue's per-file statements, built once: claiming the next files (one or a batch),
recording a file stored, claiming a prediction's files inside a caller's transaction.

Core statements on the ``output_files`` table with bound parameters: no ORM bookkeeping,
and SQLAlchemy's compiled cache hits on every call. Bound parameter names never equal a
column name (SQLAlchemy would take such a key of the parameters as a ``SET`` value).
Used by :mod:`cachelayer.catalog.queue` and :mod:`cachelayer.catalog.files`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, false, func, null, or_, select, true, update

from cachelayer.catalog.models import FILE_COLUMNS, OUTPUT_FILES
from cachelayer.catalog.records import NO_COPY, FileRecord, FileStatus
from cachelayer.catalog.session import utcnow

__all__ = [
    "CLAIM_NEXT",
    "MARK_STORED",
    "STORE_AND_CLAIM",
    "claim_params",
    "claim_prediction_files",
    "stored_and_claimed",
    "stored_params",
]

_TABLE = OUTPUT_FILES
_F = _TABLE.c


def _claim_next_statement(skip_locked: bool, *, but: Any = None) -> Any:
    """``UPDATE .. WHERE id IN (the :limit oldest claimable) RETURNING``, parameters
    ``now``, ``limit``, ``owner``, ``until``; never the row ``id = but`` (when given)."""
    now: Any = bindparam("now")
    conds = [
        _F.status == FileStatus.PENDING,
        or_(_F.available_at.is_(None), _F.available_at <= now),
        or_(_F.lease_expires_at.is_(None), _F.lease_expires_at < now),
    ]
    if but is not None:
        conds.append(_F.id != but)
    candidates = select(_F.id).where(*conds).order_by(_F.available_at, _F.id).limit(bindparam("limit"))
    if skip_locked:  # PostgreSQL: many claimers take disjoint rows without waiting
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        update(_TABLE)
        .where(_F.id.in_(candidates.scalar_subquery()))
        .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("until"), attempts=_F.attempts + 1)
        .returning(*FILE_COLUMNS)
    )


CLAIM_NEXT = {False: _claim_next_statement(False), True: _claim_next_statement(True)}

MARK_STORED = (
    update(_TABLE)
    .where(_F.id == bindparam("file_id"), _F.status.not_in(NO_COPY))
    .values(
        status=FileStatus.STORED,
        size=bindparam("p_size"),
        sha256=bindparam("p_sha256"),
        content_type=bindparam("p_content_type"),
        source_age_seconds=bindparam("p_age"),
        stored_at=bindparam("now"),
        last_error=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(*FILE_COLUMNS)
)


def _store_and_claim_statement() -> Any:
    """PostgreSQL: :data:`MARK_STORED` and :data:`CLAIM_NEXT` (``SKIP LOCKED``) as one
    statement of two data-modifying CTEs, so in autocommit it is one implicit transaction
    and one round trip. Both CTEs see the same snapshot, so the claim excludes ``file_id``
    explicitly: its row may still look pending there (claimable once its lease lapsed),
    and PostgreSQL leaves it undefined which update wins when one statement changes a row
    twice. A third ``UNION ALL`` branch calls ``set_config('synchronous_commit', 'off',
    true)`` in its ``WHERE`` and returns no row: every branch of a ``UNION ALL`` is run and
    a volatile condition is never folded away, and a local setting lasts until the end of
    the (implicit) transaction, whose commit then does not wait for the WAL flush (see
    :meth:`QueueRepository._write <cachelayer.catalog.queue.QueueRepository._write>`);
    the session's setting is untouched. Rows: ``stored`` (true for the row stored, false
    for each claimed one), then the columns of a :class:`FileRecord`."""
    stored = MARK_STORED.cte("stored")
    claimed = _claim_next_statement(True, but=bindparam("file_id")).cte("claimed")
    cols = [c.name for c in FILE_COLUMNS]
    unhurried = select(false(), *[null() for _ in cols]).where(
        func.set_config("synchronous_commit", "off", True).is_(None)
    )
    return select(true().label("stored"), *[stored.c[n] for n in cols]).union_all(
        select(false(), *[claimed.c[n] for n in cols]), unhurried
    )


#: PostgreSQL's store-and-claim-next in one statement (:func:`_store_and_claim_statement`);
#: the parameters of :data:`MARK_STORED` and :func:`claim_params` together.
STORE_AND_CLAIM = _store_and_claim_statement()


def stored_and_claimed(rows: Iterable[Any]) -> tuple[FileRecord | None, list[FileRecord]]:
    """The rows of :data:`STORE_AND_CLAIM` as ``(the stored row or None, the claimed rows
    ordered by id)``."""
    stored: FileRecord | None = None
    claimed = []
    for row in rows:
        if row.stored:
            stored = FileRecord.of(row)
        else:
            claimed.append(FileRecord.of(row))
    return stored, sorted(claimed, key=lambda r: r.id)


_CLAIM_PREDICTION = (
    update(_TABLE)
    .where(
        _F.prediction_id == bindparam("p_prediction_id"),
        _F.status.not_in(NO_COPY),
        or_(
            _F.lease_expires_at.is_(None),
            _F.lease_expires_at < bindparam("now"),
            _F.lease_owner == bindparam("owner"),
        ),
    )
    .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("until"), attempts=_F.attempts + 1)
    .returning(*FILE_COLUMNS)
)


def claim_prediction_files(
    s: Connection, prediction_id: str, owner: str, lease_seconds: float
) -> list[FileRecord]:
    """In the caller's transaction: claim every file of ``prediction_id`` that is not stored
    and that no other live lease holds (as :meth:`QueueRepository.claim` does one file)."""
    now = utcnow()
    params = {
        "p_prediction_id": prediction_id,
        "owner": owner,
        "now": now,
        "until": now + timedelta(seconds=lease_seconds),
    }
    return [FileRecord.of(r) for r in s.execute(_CLAIM_PREDICTION, params)]


def stored_params(
    file_id: int, size: int, sha256: str, content_type: str | None, age: float | None
) -> dict[str, Any]:
    """The parameters of :data:`MARK_STORED` (``size`` in bytes, ``age`` in seconds)."""
    return {
        "file_id": file_id,
        "p_size": size,
        "p_sha256": sha256,
        "p_content_type": content_type,
        "p_age": age,
        "now": utcnow(),
    }


def claim_params(owner: str, lease_seconds: float, limit: int) -> dict[str, Any]:
    """The parameters of :data:`CLAIM_NEXT`: leases of ``lease_seconds`` from now."""
    now = utcnow()
    return {"now": now, "until": now + timedelta(seconds=lease_seconds), "owner": owner, "limit": limit}
