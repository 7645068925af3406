"""Claims that make a paid action happen at most once across processes.

A rerun of a prediction whose data is gone costs money, so it is claimed first: one row in
``checkpoints`` named ``rerun:<prediction id>``, inserted only if absent (the primary key
makes the insert atomic on SQLite and PostgreSQL). The claim's ``state`` holds the owner,
when it was claimed and, once Replicate answered, the new prediction's id. Every statement
runs through the catalog's :class:`~cachelayer.catalog.session.Database` (retried, typed
errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from cachelayer.catalog.models import Checkpoint
from cachelayer.catalog.session import Database, utcnow

__all__ = ["RerunClaim", "RerunRepository"]


@dataclass(frozen=True)
class RerunClaim:
    """``mine``: this call took the claim; ``rerun_id``: the new prediction, once created;
    ``owner`` and ``claimed_at`` of whoever holds it."""

    mine: bool
    rerun_id: str | None
    owner: str | None
    claimed_at: datetime | None


def _name(prediction_id: str) -> str:
    return f"rerun:{prediction_id}"


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
        name = _name(prediction_id)
        state = {"owner": owner, "claimed_at": now.isoformat()}
        insert = (
            self.db.insert(Checkpoint)
            .values(name=name, cursor=None, state=state, updated_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        # Atomic take-over of a stale claim: only one process matches the old stamp.
        take_over = (
            update(Checkpoint)
            .where(Checkpoint.name == name, Checkpoint.updated_at < now - timedelta(seconds=stale_after))
            .values(state=state, updated_at=now)
        )
        if self.db.write_core(lambda c: c.execute(insert).rowcount):
            return RerunClaim(True, None, owner, now)
        current = self.get(prediction_id)
        if current.rerun_id is None and self.db.write_core(lambda c: c.execute(take_over).rowcount):
            return RerunClaim(True, None, owner, now)
        return current

    def get(self, prediction_id: str) -> RerunClaim:
        """The current claim (``mine`` false); all ``None`` when there is none."""
        row = self.db.read(lambda s: s.get(Checkpoint, _name(prediction_id)))
        state = (row.state if row is not None else None) or {}
        claimed = state.get("claimed_at")
        return RerunClaim(
            False,
            state.get("rerun_id"),
            state.get("owner"),
            datetime.fromisoformat(claimed) if claimed else None,
        )

    def set_rerun(self, prediction_id: str, owner: str, rerun_id: str) -> None:
        """Record the id of the prediction the claim created."""

        def work(s: Session) -> None:
            row = s.get(Checkpoint, _name(prediction_id), with_for_update=True)
            if row is not None:
                row.state = {**(row.state or {}), "owner": owner, "rerun_id": rerun_id}
                row.updated_at = utcnow()

        self.db.write(work)

    def release(self, prediction_id: str, owner: str) -> None:
        """Drop an unfulfilled claim of ``owner`` (its create failed), so a later call may try."""

        def work(s: Session) -> None:
            row = s.get(Checkpoint, _name(prediction_id), with_for_update=True)
            state = row.state or {} if row is not None else {}
            if row is not None and state.get("owner") == owner and not state.get("rerun_id"):
                s.delete(row)

        self.db.write(work)
