"""Checkpoints of long-running jobs (the backfill's history scan), keyed by what the job's
filter *means*.

Naming. A checkpoint is found again only if the next run computes the same name. Keying it
by the filter's resolved values breaks relative windows: ``--since 6h`` resolves to a new
time on every run, so each run made a new checkpoint and none ever resumed (issue 8.13).
:func:`checkpoint_name` therefore hashes the filter's **spec**: what the user asked for,
with a relative window kept relative. Pass a ``timedelta`` for "that long ago" (``6h``,
``360m`` and ``0.25d`` then share one checkpoint) or the user's text, and a ``datetime``
for an absolute time; model and status lists should be sorted by the caller.

Resuming a relative window. A saved checkpoint belongs to a spec, not to one run, so the
scan decides from ``state`` (saved by itself) and the time of the new run ``now``:

1. The window of the new run is ``[now - window, until)``. If the saved run was interrupted
   (``state["complete"]`` false), continue its cursor, but stop at the *new* lower bound
   (``now - window`` is later than the old one, so this never scans less than asked).
2. Predictions created after the interrupted run started are newer than anything its
   cursor will reach (the history is listed newest first): also scan from the head (no
   cursor) down to where the interrupted run began, e.g. the ``created_at`` of the newest
   prediction it saw, kept in ``state`` (this closes the resume gap of issue 8.6).
3. A completed checkpoint means the window up to its ``state``'s high-water mark was
   scanned; a new run scans from the head down to ``max(now - window, high-water mark)``,
   but never stops above a prediction that was not yet terminal when last seen (keep the
   oldest such ``created_at`` in ``state`` and scan down to it), since its files appear
   only when it finishes.

``state`` is any JSON object (stored under the catalog's lossless rules); keep times in it
as ISO 8601 UTC strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, delete

from cachelayer.catalog.models import CHECKPOINTS
from cachelayer.catalog.session import Database, by_key, utcnow

__all__ = ["CheckpointRecord", "CheckpointRepository", "canonical_spec", "checkpoint_name"]

#: Longest job prefix of a checkpoint name (the name column holds 255 characters).
MAX_JOB_CHARS = 180


@dataclass(frozen=True)
class CheckpointRecord:
    """A saved checkpoint: ``cursor`` where the job resumes (``None``: at the start),
    ``state`` (a JSON object), ``updated_at`` (aware UTC) of the last save."""

    name: str
    cursor: str | None
    state: dict[str, Any]
    updated_at: datetime


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, timedelta):
        return {"ago_seconds": value.total_seconds()}
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return {"at": at.astimezone(timezone.utc).isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    raise TypeError(f"cannot key a checkpoint by {type(value).__name__}: {value!r}")


def canonical_spec(spec: Any) -> str:
    """The canonical JSON text of a filter spec (what :func:`checkpoint_name` hashes):
    mapping keys sorted, ``timedelta`` as ``{"ago_seconds": s}``, ``datetime`` as
    ``{"at": ISO 8601 UTC}`` (naive ones are UTC), sets sorted. Raises ``TypeError`` for
    other objects."""
    return json.dumps(
        _canonical(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def checkpoint_name(job: str, spec: Any) -> str:
    """``<job>:<32 hex>``: the name of the checkpoint of ``job`` (e.g. ``backfill``) for the
    filter ``spec`` (a mapping such as ``{"since": timedelta(hours=6), "until": None,
    "models": ["a/b"], "source": None, "statuses": []}``, or the user's text). Equal specs
    give equal names in every process and version; see the module docstring. Raises
    ``ValueError`` for a job name over 180 characters and ``TypeError`` for a spec value
    that has no canonical form."""
    if not job or len(job) > MAX_JOB_CHARS:
        raise ValueError(f"a checkpoint job name must have 1 to {MAX_JOB_CHARS} characters")
    digest = hashlib.sha256(canonical_spec(spec).encode("ascii")).hexdigest()[:32]
    return f"{job}:{digest}"


class CheckpointRepository:
    """Named queries over ``checkpoints``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, name: str) -> CheckpointRecord | None:
        """The checkpoint saved under ``name``, or ``None``."""

        def work(s: Connection) -> CheckpointRecord | None:
            row = by_key(s, CHECKPOINTS, name)
            if row is None:
                return None
            return CheckpointRecord(row.name, row.cursor, dict(row.state or {}), row.updated_at)

        return self.db.read(work)

    def save(self, name: str, cursor: str | None, state: Mapping[str, Any]) -> None:
        """Save (insert or replace) the checkpoint ``name`` with ``cursor`` (any text, e.g.
        Replicate's next-page cursor) and ``state`` (a JSON object)."""
        stmt = self.db.insert(CHECKPOINTS).values(
            name=name, cursor=cursor, state=dict(state), updated_at=utcnow()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "cursor": stmt.excluded.cursor,
                "state": stmt.excluded.state,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        self.db.write(lambda s: s.execute(stmt))

    def delete(self, name: str) -> bool:
        """Forget the checkpoint ``name``; returns whether there was one."""

        stmt = delete(CHECKPOINTS).where(CHECKPOINTS.c.name == name)
        return self.db.write(lambda s: s.execute(stmt).rowcount > 0)
