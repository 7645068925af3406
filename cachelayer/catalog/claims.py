"""The queue's per-file statements, built once: claiming the next files (one or a batch),
recording a file stored, claiming a prediction's files inside a caller's transaction.

Core statements on the ``output_files`` table with bound parameters: no ORM bookkeeping,
and SQLAlchemy's compiled cache hits on every call. Bound parameter names never equal a
column name (SQLAlchemy would take such a key of the parameters as a ``SET`` value).
Used by :mod:`cachelayer.catalog.queue` and :mod:`cachelayer.catalog.files`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from cachelayer.catalog.models import FILE_COLUMNS, OutputFile
from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.catalog.session import utcnow

__all__ = ["CLAIM_NEXT", "MARK_STORED", "claim_params", "claim_prediction_files"]

_TABLE = cast(Table, OutputFile.__table__)
_F = _TABLE.c


def _claim_next_statement(skip_locked: bool) -> Any:
    """``UPDATE .. WHERE id IN (the :limit oldest claimable) RETURNING``, parameters
    ``now``, ``limit``, ``owner``, ``until``."""
    now: Any = bindparam("now")
    candidates = (
        select(_F.id)
        .where(
            _F.status == FileStatus.PENDING,
            or_(_F.available_at.is_(None), _F.available_at <= now),
            or_(_F.lease_expires_at.is_(None), _F.lease_expires_at < now),
        )
        .order_by(_F.available_at, _F.id)
        .limit(bindparam("limit"))
    )
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
    .where(_F.id == bindparam("file_id"), _F.status != FileStatus.STORED)
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


_CLAIM_PREDICTION = (
    update(_TABLE)
    .where(
        _F.prediction_id == bindparam("p_prediction_id"),
        _F.status != FileStatus.STORED,
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
    s: Session, prediction_id: str, owner: str, lease_seconds: float
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


def claim_params(owner: str, lease_seconds: float, limit: int) -> dict[str, Any]:
    """The parameters of :data:`CLAIM_NEXT`: leases of ``lease_seconds`` from now."""
    now = utcnow()
    return {"now": now, "until": now + timedelta(seconds=lease_seconds), "owner": owner, "limit": limit}
