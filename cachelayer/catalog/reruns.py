"""Claims that make a paid action happen at most once across processes.

A rerun of a prediction whose data is gone costs money, so it is claimed first: one row in
``rerun_claims`` keyed by the prediction id, inserted only if absent (the primary key makes
the insert atomic on SQLite and PostgreSQL), holding the owner, when it was claimed and,
once Replicate answered, the new prediction's id. Every statement runs through the
catalog's :class:`~cachelayer.catalog.session.Database` (retried, typed errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update

from cachelayer.catalog.models import RERUN_CLAIMS
from cachelayer.catalog.session import Database, by_key, utcnow

__all__ = ["RerunClaim", "RerunRepository"]


@dataclass(frozen=True)
class RerunClaim:
    """``mine``: this call took the claim; ``rerun_id``: the new prediction, once created;
    ``owner`` and ``claimed_at`` of whoever holds it."""

    mine: bool
    rerun_id: str | None
    owner: str | None
    claimed_at: datetime | None


class RerunRepository:
    """At-most-once rerun claims (``catalog.reruns``). Raises what
    :class:`~cachelayer.catalog.session.Database` raises: a
    :class:`~cachelayer.errors.CatalogOutageError` past the retry budget, else a
    :class:`~cachelayer.errors.CatalogError`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, prediction_id: str, owner: str, *, stale_after: float) -> RerunClaim:
        """Take the claim on rerunning ``prediction_id`` unless someone holds it. A claim
        without a ``rerun_id`` older than ``stale_after`` seconds (its process died before
        Replicate answered) is taken over."""
        now = utcnow()
        row = {"owner": owner, "claimed_at": now}
        insert = (
            self.db.insert(RERUN_CLAIMS)
            .values(prediction_id=prediction_id, rerun_id=None, **row)
            .on_conflict_do_nothing(index_elements=["prediction_id"])
            .returning(RERUN_CLAIMS.c.prediction_id)  # rowcount is unreliable for DO NOTHING
        )
        # Atomic take-over of a stale claim: only one process matches the old stamp.
        take_over = (
            update(RERUN_CLAIMS)
            .where(
                RERUN_CLAIMS.c.prediction_id == prediction_id,
                RERUN_CLAIMS.c.rerun_id.is_(None),
                RERUN_CLAIMS.c.claimed_at < now - timedelta(seconds=stale_after),
            )
            .values(**row)
        )
        if self.db.write_core(lambda c: c.execute(insert).first() is not None):
            return RerunClaim(True, None, owner, now)
        if self.db.write_core(lambda c: c.execute(take_over).rowcount):
            return RerunClaim(True, None, owner, now)
        return self.get(prediction_id)

    def get(self, prediction_id: str) -> RerunClaim:
        """The current claim (``mine`` false); all ``None`` when there is none."""
        row = self.db.read(lambda s: by_key(s, RERUN_CLAIMS, prediction_id))
        if row is None:
            return RerunClaim(False, None, None, None)
        return RerunClaim(False, row.rerun_id, row.owner, row.claimed_at)

    def set_rerun(self, prediction_id: str, owner: str, rerun_id: str) -> None:
        """Record the id of the prediction the claim created."""
        stmt = (
            update(RERUN_CLAIMS)
            .where(RERUN_CLAIMS.c.prediction_id == prediction_id)
            .values(owner=owner, rerun_id=rerun_id)
        )
        self.db.write_core(lambda c: c.execute(stmt))

    def release(self, prediction_id: str, owner: str) -> None:
        """Drop an unfulfilled claim of ``owner`` (its create failed), so a later call may try."""
        stmt = delete(RERUN_CLAIMS).where(
            RERUN_CLAIMS.c.prediction_id == prediction_id,
            RERUN_CLAIMS.c.owner == owner,
            RERUN_CLAIMS.c.rerun_id.is_(None),
        )
        self.db.write_core(lambda c: c.execute(stmt))
