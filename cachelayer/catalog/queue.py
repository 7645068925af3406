"""``output_files`` as the work queue: claims (leases), outcomes, counts.

As in procrastinate, the catalog is also the queue: a file is *claimed* by setting a lease
(``lease_owner``, ``lease_expires_at``); a claim whose lease has passed may be taken over,
so a crashed process never strands work. Lease times come from the clock of the process
taking the claim (keep hosts on NTP). Every status change of a file happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, func, or_, select, text, update

from cachelayer.catalog.claims import (
    CLAIM_NEXT,
    MARK_STORED,
    STORE_AND_CLAIM,
    claim_params,
    stored_and_claimed,
    stored_params,
)
from cachelayer.catalog.models import FILE_COLUMNS, OUTPUT_FILES
from cachelayer.catalog.predictions import set_complete_output_in
from cachelayer.catalog.records import NO_COPY, FileRecord, FileStatus
from cachelayer.catalog.session import Database, chunked, utcnow

__all__ = ["MAX_CLAIM_BATCH", "MAX_ERROR_CHARS", "QueueRepository"]

T = TypeVar("T")

#: Characters of an error message kept in ``last_error``.
MAX_ERROR_CHARS = 2000
#: Most files one :meth:`QueueRepository.claim_batch` hands out.
MAX_CLAIM_BATCH = 1000


def _status(value: str | FileStatus, allowed: tuple[FileStatus, ...]) -> FileStatus:
    status = FileStatus.parse(value)
    if status not in allowed:
        raise ValueError(f"status must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return status


class QueueRepository:
    """Claims, outcomes and counts over ``output_files`` (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._async_commit = (
            text("SET LOCAL synchronous_commit TO off") if db.dialect == "postgresql" else None
        )

    def _write(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction (:meth:`Database.write_core`: Core statements only).
        On PostgreSQL the commit does not wait for the WAL flush (``synchronous_commit`` off
        for this transaction only): every queue write is idempotent, so what a server crash
        could lose (the last fraction of a second of commits) only lets a claim lapse or has
        a file copied again to the same key. Records of predictions and files keep the
        default. (The one statement of :meth:`mark_stored_and_claim` on PostgreSQL sets it
        itself.)"""
        if self._async_commit is None:
            return self.db.write_core(work)
        stmt = self._async_commit

        def unhurried(c: Connection) -> T:
            c.execute(stmt)
            return work(c)

        return self.db.write_core(unhurried)

    def _update_returning(self, stmt: Any) -> FileRecord | None:
        """Run an ``UPDATE`` of ``output_files``; the updated row as a record, or ``None``."""
        stmt = stmt.returning(*FILE_COLUMNS).execution_options(synchronize_session=False)

        def work(s: Connection) -> FileRecord | None:
            row = s.execute(stmt).first()
            return FileRecord.of(row) if row is not None else None

        return self._write(work)

    def _rowcount(self, stmt: Any) -> int:
        stmt = stmt.execution_options(synchronize_session=False)
        return self._write(lambda s: int(s.execute(stmt).rowcount))

    # ---- claims ---------------------------------------------------------------------------

    def claim(self, file_id: int, owner: str, lease_seconds: float) -> FileRecord | None:
        """Take the lease on a file that is not stored and not leased by someone else.

        Returns the row (``attempts`` already bumped) when this ``owner`` now holds it,
        ``None`` otherwise.
        """
        now = utcnow()
        return self._update_returning(
            update(OUTPUT_FILES)
            .where(
                OUTPUT_FILES.c.id == file_id,
                OUTPUT_FILES.c.status.not_in(NO_COPY),
                or_(
                    OUTPUT_FILES.c.lease_expires_at.is_(None),
                    OUTPUT_FILES.c.lease_expires_at < now,
                    OUTPUT_FILES.c.lease_owner == owner,
                ),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=OUTPUT_FILES.c.attempts + 1,
            )
        )

    def claim_next(self, owner: str, lease_seconds: float) -> FileRecord | None:
        """Claim the oldest claimable ``pending`` file (its ``available_at`` has come and no
        live lease holds it) for ``owner``; ``None`` when the queue has nothing to hand out.

        On PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP LOCKED``, so many
        workers on many machines claim disjoint files without waiting on each other; on
        SQLite the database's single writer lock serialises claims.
        """
        claimed = self.claim_batch(owner, lease_seconds, 1)
        return claimed[0] if claimed else None

    def claim_batch(self, owner: str, lease_seconds: float, limit: int) -> list[FileRecord]:
        """Claim up to ``limit`` (1..:data:`MAX_CLAIM_BATCH`) of the oldest claimable files
        for ``owner`` in one transaction, oldest first (as :meth:`claim_next`); every lease
        runs ``lease_seconds`` from now, so the caller renews them (the heartbeat) until it
        gets to each. ``[]`` when nothing is claimable. Raises ``ValueError`` for a bad
        ``limit``."""
        if not 1 <= limit <= MAX_CLAIM_BATCH:
            raise ValueError(f"limit must be 1..{MAX_CLAIM_BATCH}, got {limit!r}")
        params = claim_params(owner, lease_seconds, limit)
        return self._write(lambda s: self._claim(s, params))

    def _claim(self, s: Connection, params: dict[str, Any]) -> list[FileRecord]:
        rows = s.execute(CLAIM_NEXT[self.db.dialect == "postgresql"], params).all()
        return sorted((FileRecord.of(r) for r in rows), key=lambda r: r.id)

    def renew(self, file_ids: Iterable[int], owner: str, lease_seconds: float) -> None:
        """Extend the leases ``owner`` holds on ``file_ids`` (heartbeat of long transfers)."""
        ids = list(file_ids)

        def work(s: Connection) -> None:
            until = utcnow() + timedelta(seconds=lease_seconds)
            for chunk in chunked(ids):
                s.execute(
                    update(OUTPUT_FILES)
                    .where(OUTPUT_FILES.c.id.in_(chunk), OUTPUT_FILES.c.lease_owner == owner)
                    .values(lease_expires_at=until)
                    .execution_options(synchronize_session=False)
                )

        if ids:
            self._write(work)

    def release_leases(self, owners: Iterable[str]) -> int:
        """Drop the leases of ``owners`` (processes known to be dead); returns how many."""
        return self._update_chunks(
            OUTPUT_FILES.c.lease_owner, owners, lease_owner=None, lease_expires_at=None
        )

    def release(self, file_ids: Iterable[int], owner: str) -> int:
        """Give back files ``owner`` claimed and never started: the lease is dropped and
        the claim's ``attempts`` increment undone. Returns how many."""
        return self._update_chunks(
            OUTPUT_FILES.c.id,
            file_ids,
            OUTPUT_FILES.c.lease_owner == owner,
            lease_owner=None,
            lease_expires_at=None,
            attempts=OUTPUT_FILES.c.attempts - 1,
        )

    def _update_chunks(self, column: Any, items: Iterable[Any], *conds: Any, **values: Any) -> int:
        """``UPDATE output_files SET values WHERE column IN items AND conds`` in chunks, one
        transaction; returns how many rows changed."""
        keys = list(items)

        def work(s: Connection) -> int:
            n = 0
            for chunk in chunked(keys):
                stmt = update(OUTPUT_FILES).where(column.in_(chunk), *conds).values(**values)
                n += int(s.execute(stmt.execution_options(synchronize_session=False)).rowcount)
            return n

        return self._write(work) if keys else 0

    def lease_owners(self) -> list[str]:
        """Distinct owners currently holding a lease (live or lapsed)."""
        stmt = select(OUTPUT_FILES.c.lease_owner).where(OUTPUT_FILES.c.lease_owner.is_not(None)).distinct()
        return self.db.read(lambda s: list(s.scalars(stmt)))

    # ---- outcomes -------------------------------------------------------------------------

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
        """Record a completed copy (``size`` in bytes, hex ``sha256``, ``content_type`` of
        any length) and release the lease; returns the stored row, or ``None`` if another
        process had already recorded the file as stored."""
        stored, _ = self.mark_stored_and_claim(
            file_id,
            owner,
            size=size,
            sha256=sha256,
            content_type=content_type,
            source_age_seconds=source_age_seconds,
        )
        return stored

    def mark_stored_and_claim(
        self,
        file_id: int,
        owner: str,
        *,
        size: int,
        sha256: str,
        content_type: str | None,
        source_age_seconds: float | None,
        lease_seconds: float = 0.0,
        claim: int = 0,
    ) -> tuple[FileRecord | None, list[FileRecord]]:
        """:meth:`mark_stored`, then (``claim`` > 0) :meth:`claim_batch` of up to ``claim``
        files for ``owner``, atomically: a worker's steady state is one transaction per
        file. Returns ``(stored row or None, claimed rows by id)``; the file being stored is
        never among the claimed rows.

        On PostgreSQL both are one statement (:data:`~cachelayer.catalog.claims.STORE_AND_CLAIM`)
        run in autocommit: one round trip, no ``BEGIN``/``COMMIT``, committed without
        waiting for the WAL flush as every queue write is (:meth:`_write`). Raises
        :class:`~cachelayer.errors.CatalogWriteError` and
        :class:`~cachelayer.errors.CatalogOutageError`."""
        params = stored_params(file_id, size, sha256, content_type, source_age_seconds)
        if self.db.dialect == "postgresql":
            params.update(claim_params(owner, lease_seconds, claim))
            return self.db.write_statement(lambda c: stored_and_claimed(c.execute(STORE_AND_CLAIM, params)))
        more = claim_params(owner, lease_seconds, claim) if claim > 0 else None

        def work(s: Connection) -> tuple[FileRecord | None, list[FileRecord]]:
            row = s.execute(MARK_STORED, params).first()
            return (FileRecord.of(row) if row is not None else None), (self._claim(s, more) if more else [])

        return self._write(work)

    def mark_stored_with_output(
        self,
        file_id: int,
        *,
        size: int,
        sha256: str,
        content_type: str | None,
        source_age_seconds: float | None,
        prediction_id: str,
        object_uri: Callable[[str], str],
    ) -> tuple[FileRecord | None, bool]:
        """:meth:`mark_stored`, and in the same transaction (committed as records of
        predictions are: after PostgreSQL's WAL flush) the durable output of ``prediction_id``
        recorded, its files as ``object_uri(key)``, if none of them is left unstored
        (``predictions.set_complete_output_in``).
        Returns ``(stored row or None, whether the output was recorded)``: nothing is when
        another process stored the file first. Raises
        :class:`~cachelayer.errors.CatalogWriteError` and
        :class:`~cachelayer.errors.CatalogOutageError`."""
        params = stored_params(file_id, size, sha256, content_type, source_age_seconds)

        def work(c: Connection) -> tuple[FileRecord | None, bool]:
            row = c.execute(MARK_STORED, params).first()
            if row is None:
                return None, False
            recorded = set_complete_output_in(c, prediction_id, object_uri)
            return FileRecord.of(row), recorded

        return self.db.write_core(work, prediction_id=prediction_id)

    def mark_unstored(
        self,
        file_id: int,
        owner: str,
        *,
        status: str | FileStatus,
        error: str,
        source_age_seconds: float | None = None,
        retry_after: float | None = None,
    ) -> FileRecord | None:
        """Record a failed attempt (``status`` ``failed``, ``expired`` or ``pending`` to
        retry) and release the lease; returns the row, or ``None`` if ``owner`` no longer
        held it. ``retry_after`` (seconds) keeps the queue from handing it out before then.
        ``error`` is kept to its first 2,000 characters. Raises ``ValueError`` for another
        status."""
        st = _status(status, (FileStatus.FAILED, FileStatus.EXPIRED, FileStatus.PENDING))
        now = utcnow()
        return self._update_returning(
            update(OUTPUT_FILES)
            .where(
                OUTPUT_FILES.c.id == file_id,
                OUTPUT_FILES.c.status.not_in(NO_COPY),
                or_(OUTPUT_FILES.c.lease_owner == owner, OUTPUT_FILES.c.lease_owner.is_(None)),
            )
            .values(
                status=st,
                last_error=error[:MAX_ERROR_CHARS],
                lease_owner=None,
                lease_expires_at=None,
                source_age_seconds=source_age_seconds,
                available_at=now + timedelta(seconds=retry_after or 0),
            )
        )

    def mark_prediction_expired(self, prediction_id: str, error: str) -> int:
        """Mark every not-yet-stored, unleased file of a prediction ``expired``; returns how
        many."""
        return self._rowcount(
            update(OUTPUT_FILES)
            .where(
                OUTPUT_FILES.c.prediction_id == prediction_id,
                OUTPUT_FILES.c.status.not_in(NO_COPY),
                OUTPUT_FILES.c.lease_owner.is_(None),
            )
            .values(status=FileStatus.EXPIRED, last_error=error[:MAX_ERROR_CHARS])
        )

    def requeue_failed(self) -> int:
        """Put every ``failed`` file back in the queue (``pending``, attempts reset, error
        kept until the next attempt), e.g. after a setting was fixed. Returns how many."""
        reset = {"attempts": 0, "available_at": None, "lease_owner": None, "lease_expires_at": None}
        failed = OUTPUT_FILES.c.status == FileStatus.FAILED
        return self._rowcount(update(OUTPUT_FILES).where(failed).values(status=FileStatus.PENDING, **reset))

    def mark_unverified(
        self, file_id: int, *, status: str | FileStatus, error: str, expected_sha256: str | None = None
    ) -> bool:
        """Take a stored file whose object failed verification out of ``stored``:
        ``status`` ``pending`` (re-queued: available now, lease cleared, so a worker or
        ``persist`` copies it again) or ``failed``; ``error`` goes to ``last_error``. Only a
        row still ``stored`` (and, if given, still recording ``expected_sha256``) changes,
        so a concurrent re-copy is not undone. Nothing is deleted. Returns whether the row
        changed. Raises ``ValueError`` for another status."""
        st = _status(status, (FileStatus.PENDING, FileStatus.FAILED))
        conds = [OUTPUT_FILES.c.id == file_id, OUTPUT_FILES.c.status == FileStatus.STORED]
        if expected_sha256 is not None:
            conds.append(OUTPUT_FILES.c.sha256 == expected_sha256)
        return bool(
            self._rowcount(
                update(OUTPUT_FILES)
                .where(*conds)
                .values(
                    status=st,
                    last_error=error[:MAX_ERROR_CHARS],
                    lease_owner=None,
                    lease_expires_at=None,
                    available_at=utcnow(),
                )
            )
        )

    def analyze(self) -> None:
        """Refresh PostgreSQL's planner statistics of ``output_files`` (``ANALYZE``; a no-op
        on SQLite). A scan calls it once its first pages are queued: until autovacuum gets
        there, the planner takes a fresh queue for empty and sorts every pending row on
        each claim instead of reading the queue index in order."""
        if self.db.dialect == "postgresql":
            self.db.write(lambda s: s.execute(text("ANALYZE output_files")))

    # ---- counts ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Number of output files per status, e.g. ``{"pending": 3, "stored": 10}``."""
        return self.db.read(
            lambda s: {
                str(status): int(n)
                for status, n in s.execute(
                    select(OUTPUT_FILES.c.status, func.count()).group_by(OUTPUT_FILES.c.status)
                )
            }
        )

    def _count_pending(self, lease: Any) -> int:
        pending = (OUTPUT_FILES.c.status == FileStatus.PENDING) & lease
        return self.db.read(lambda s: int(s.scalar(select(func.count()).where(pending)) or 0))

    def count_leased_pending(self) -> int:
        """Pending files a live lease holds (being copied by some process now); uses the
        status index, not a scan of the table."""
        return self._count_pending(OUTPUT_FILES.c.lease_expires_at >= utcnow())

    def count_unleased_pending(self) -> int:
        """Pending files no live lease holds (claimable now or after their backoff)."""
        lease = OUTPUT_FILES.c.lease_expires_at
        return self._count_pending(or_(lease.is_(None), lease < utcnow()))
