"""Claims that make a paid action happen at most once across processes, and re-queueing.

A rerun of a prediction whose data is gone costs money, so it is claimed first: one row in
``checkpoints`` named ``rerun:<prediction id>``, inserted only if absent (the primary key
makes the insert atomic on SQLite and PostgreSQL). The claim's ``state`` holds the owner,
when it was claimed and, once Replicate answered, the new prediction's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import sessionmaker

from cachelayer.catalog.models import Checkpoint, OutputFile
from cachelayer.catalog.session import dialect_insert

__all__ = ["RerunClaim", "RerunClaims", "requeue_failed"]


@dataclass(frozen=True)
class RerunClaim:
    """``mine``: this call took the claim; ``rerun_id``: the new prediction, once created;
    ``owner`` and ``claimed_at`` of whoever holds it."""

    mine: bool
    rerun_id: str | None
    owner: str | None
    claimed_at: datetime | None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RerunClaims:
    """At-most-once rerun claims for one catalog ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @staticmethod
    def _name(prediction_id: str) -> str:
        return f"rerun:{prediction_id}"

    def claim(self, prediction_id: str, owner: str, *, stale_after: float) -> RerunClaim:
        """Take the claim on rerunning ``prediction_id`` unless someone holds it. A claim
        without a ``rerun_id`` older than ``stale_after`` seconds (its process died before
        Replicate answered) is taken over."""
        now = _now()
        name = self._name(prediction_id)
        state = {"owner": owner, "claimed_at": now.isoformat()}
        stmt = dialect_insert(self.engine.dialect.name, Checkpoint).values(
            name=name, cursor=None, state=state, updated_at=now
        )
        with self.sessions.begin() as s:
            inserted = _rowcount(s.execute(stmt.on_conflict_do_nothing(index_elements=["name"])))
        if inserted:
            return RerunClaim(True, None, owner, now)
        current = self.get(prediction_id)
        if current.rerun_id is None:
            # Atomic take-over of a stale claim: only one process matches the old stamp.
            with self.sessions.begin() as s:
                taken = _rowcount(
                    s.execute(
                        update(Checkpoint)
                        .where(
                            Checkpoint.name == name,
                            Checkpoint.updated_at < now - timedelta(seconds=stale_after),
                        )
                        .values(state=state, updated_at=now)
                    )
                )
            if taken:
                return RerunClaim(True, None, owner, now)
        return current

    def get(self, prediction_id: str) -> RerunClaim:
        """The current claim (``mine`` false); all ``None`` when there is none."""
        with self.sessions() as s:
            row = s.get(Checkpoint, self._name(prediction_id))
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
        with self.sessions.begin() as s:
            row = s.get(Checkpoint, self._name(prediction_id), with_for_update=True)
            if row is None:
                return
            row.state = {**(row.state or {}), "owner": owner, "rerun_id": rerun_id}
            row.updated_at = _now()

    def release(self, prediction_id: str, owner: str) -> None:
        """Drop an unfulfilled claim of ``owner`` (its create failed), so a later call may try."""
        with self.sessions.begin() as s:
            row = s.get(Checkpoint, self._name(prediction_id), with_for_update=True)
            state = row.state or {} if row is not None else {}
            if row is not None and state.get("owner") == owner and not state.get("rerun_id"):
                s.delete(row)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def requeue_failed(engine: Engine) -> int:
    """Put every ``failed`` file back in the queue (``pending``, attempts reset, error kept
    until the next attempt), e.g. after a setting was fixed. Returns how many."""
    with sessionmaker(engine).begin() as s:
        result = s.execute(
            update(OutputFile)
            .where(OutputFile.status == "failed")
            .values(status="pending", attempts=0, available_at=None, lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)
