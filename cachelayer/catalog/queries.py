"""The catalog: every query the rest of cachelayer runs, as named methods.

As in procrastinate, SQL lives here and nowhere else. The same tables serve as the work
queue: a file is *claimed* by setting a lease (``lease_owner``, ``lease_expires_at``); a
claim whose lease has passed may be taken over, so a crashed process never strands work.
Lease times come from the clock of the process taking the claim (keep hosts on NTP).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import sessionmaker

from cachelayer.catalog.models import Checkpoint, OutputFile, Prediction, SourceUrl
from cachelayer.catalog.records import FileRecord, PredictionRecord
from cachelayer.catalog.reports import ReportQueries


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """Parse Replicate's RFC 3339 timestamps (up to 9 fractional digits, ``Z``) to aware UTC."""
    if value is None or isinstance(value, datetime):
        return value
    text = str(value).strip().replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def catalog_url(url: str) -> str:
    """The form in which a source URL is recorded: itself, except ``data:`` URIs (which can
    be megabytes) become ``data:<media type>;sha256,<hex digest of the whole URI>``."""
    if not url.startswith("data:"):
        return url
    media = url[5:].split(",", 1)[0].split(";", 1)[0] or "text/plain"
    return f"data:{media};sha256,{hashlib.sha256(url.encode()).hexdigest()}"


@dataclass(frozen=True)
class NewFile:
    """A file to record: its output path, source URL and the key it will be stored under."""

    output_path: str
    source_url: str
    key: str


class Catalog(ReportQueries):
    """Named queries over one catalog database (``engine``); thread-safe.

    Every method opens its own short transaction, so callers never hold locks while
    transferring bytes.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def _insert(self, model: Any) -> Any:
        mod = postgresql if self.dialect == "postgresql" else sqlite
        return mod.insert(model)

    # ---- predictions ------------------------------------------------------------------

    def record_prediction(self, data: dict[str, Any], *, rerun_of: str | None = None) -> None:
        """Insert or update a prediction from its Replicate JSON (``id``, ``model``, ...).

        A later snapshot updates status, times and ``data_removed``; a recorded ``input``
        or ``output`` is never overwritten by the ``null`` Replicate shows after removal.
        """
        now = utcnow()
        values = {
            "id": data["id"],
            "model": data.get("model"),
            "version": data.get("version"),
            "status": data.get("status") or "unknown",
            "source": data.get("source"),
            "input": data.get("input") or None,
            "output": data.get("output"),
            "error": None if data.get("error") is None else str(data.get("error")),
            "created_at": parse_time(data.get("created_at")),
            "started_at": parse_time(data.get("started_at")),
            "completed_at": parse_time(data.get("completed_at")),
            "data_removed": bool(data.get("data_removed")),
            "rerun_of": rerun_of,
            "recorded_at": now,
            "updated_at": now,
        }
        stmt = self._insert(Prediction).values(**values)
        ex = stmt.excluded
        keep = Prediction.__table__.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "model": ex.model, "version": ex.version, "status": ex.status,
                "source": ex.source, "error": ex.error, "created_at": ex.created_at,
                "started_at": ex.started_at, "completed_at": ex.completed_at,
                "data_removed": or_(keep.data_removed, ex.data_removed),
                "input": _coalesce(ex.input, keep.input),
                "output": _coalesce(ex.output, keep.output),
                "rerun_of": _coalesce(keep.rerun_of, ex.rerun_of),
                "updated_at": ex.updated_at,
            },
        )
        with self.sessions.begin() as s:
            s.execute(stmt)

    def set_durable_output(self, prediction_id: str, durable_output: Any) -> None:
        """Record the output with each file replaced by its object URI."""
        with self.sessions.begin() as s:
            s.execute(
                update(Prediction)
                .where(Prediction.id == prediction_id)
                .values(durable_output=durable_output, updated_at=utcnow())
            )

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The recorded prediction, or ``None``."""
        with self.sessions() as s:
            row = s.get(Prediction, prediction_id)
            return PredictionRecord.of(row) if row else None

    def reruns_of(self, prediction_id: str) -> list[PredictionRecord]:
        """Predictions recorded as reruns of ``prediction_id``, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(
                select(Prediction).where(Prediction.rerun_of == prediction_id)
                .order_by(Prediction.recorded_at)
            )
            return [PredictionRecord.of(r) for r in rows]

    # ---- output files -----------------------------------------------------------------

    def ensure_files(
        self, prediction_id: str, files: Sequence[NewFile], *, store: str,
        model: str | None, created_at: datetime | None,
    ) -> list[FileRecord]:
        """Record each file as ``pending`` unless a row for its output path exists.

        An existing row whose source URL changed (Replicate rotated it) gets the new URL;
        every URL is remembered in ``source_urls``. Returns every file row of the
        prediction, ordered by output path.
        """
        now = utcnow()
        with self.sessions.begin() as s:
            if files:
                stmt = self._insert(OutputFile).values([
                    {
                        "prediction_id": prediction_id, "output_path": f.output_path,
                        "source_url": catalog_url(f.source_url), "store": store, "key": f.key,
                        "status": "pending", "attempts": 0, "model": model,
                        "created_at": created_at, "available_at": now,
                    }
                    for f in files
                ]).on_conflict_do_nothing(index_elements=["prediction_id", "output_path"])
                s.execute(stmt)
            rows = list(s.scalars(
                select(OutputFile).where(OutputFile.prediction_id == prediction_id)
                .order_by(OutputFile.output_path)
            ))
            by_path = {r.output_path: r for r in rows}
            aliases = []
            for f in files:
                row = by_path[f.output_path]
                url = catalog_url(f.source_url)
                if row.source_url != url and row.status != "stored":
                    row.source_url = url
                aliases.append({"output_file_id": row.id, "url": url, "seen_at": now})
            if aliases:
                s.execute(self._insert(SourceUrl).values(aliases).on_conflict_do_nothing(
                    index_elements=["output_file_id", "url"]))
            return [FileRecord.of(r) for r in rows]

    def add_source_url(self, file_id: int, url: str) -> None:
        """Remember another URL (a refreshed one) the file was served from."""
        with self.sessions.begin() as s:
            s.execute(self._insert(SourceUrl).values(
                output_file_id=file_id, url=catalog_url(url), seen_at=utcnow()
            ).on_conflict_do_nothing(index_elements=["output_file_id", "url"]))
            s.execute(update(OutputFile).where(OutputFile.id == file_id,
                                                OutputFile.status != "stored")
                      .values(source_url=catalog_url(url)))

    def files_of(self, prediction_id: str) -> list[FileRecord]:
        """Every file row of a prediction, ordered by output path."""
        with self.sessions() as s:
            rows = s.scalars(select(OutputFile).where(OutputFile.prediction_id == prediction_id)
                             .order_by(OutputFile.output_path))
            return [FileRecord.of(r) for r in rows]

    def get_file(self, file_id: int) -> FileRecord | None:
        """One file row by id."""
        with self.sessions() as s:
            row = s.get(OutputFile, file_id)
            return FileRecord.of(row) if row else None

    def resolve(self, url: str) -> FileRecord | None:
        """The stored file that ``url`` (current or any earlier source URL) was copied into,
        or ``None`` if no stored file was ever served from it (see :meth:`resolve_many`)."""
        return self.resolve_many([url])[url]

    # ---- claims (the queue) -------------------------------------------------------------

    def claim(self, file_id: int, owner: str, lease_seconds: float) -> FileRecord | None:
        """Take the lease on a file that is not stored and not leased by someone else.

        Returns the row (``attempts`` already bumped) when this ``owner`` now holds it,
        ``None`` otherwise.
        """
        now = utcnow()
        return self._update_returning(
            update(OutputFile)
            .where(
                OutputFile.id == file_id,
                OutputFile.status != "stored",
                or_(OutputFile.lease_expires_at.is_(None), OutputFile.lease_expires_at < now,
                    OutputFile.lease_owner == owner),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=OutputFile.attempts + 1))

    def _update_returning(self, stmt: Any) -> FileRecord | None:
        """Run an ``UPDATE`` of ``output_files`` and return the updated row, if any."""
        stmt = stmt.returning(OutputFile).execution_options(synchronize_session=False)
        with self.sessions.begin() as s:
            row = s.scalars(stmt).first()
            return FileRecord.of(row) if row is not None else None

    def renew(self, file_ids: Iterable[int], owner: str, lease_seconds: float) -> None:
        """Extend the leases ``owner`` holds on ``file_ids`` (heartbeat of long transfers)."""
        ids = list(file_ids)
        if not ids:
            return
        with self.sessions.begin() as s:
            s.execute(
                update(OutputFile)
                .where(OutputFile.id.in_(ids), OutputFile.lease_owner == owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            )

    def mark_stored(
        self, file_id: int, owner: str, *, size: int, sha256: str, content_type: str | None,
        source_age_seconds: float | None,
    ) -> FileRecord | None:
        """Record a completed copy and release the lease; returns the stored row, or
        ``None`` if another process had already recorded the file as stored."""
        return self._update_returning(
            update(OutputFile)
            .where(OutputFile.id == file_id, OutputFile.status != "stored")
            .values(status="stored", size=size, sha256=sha256, content_type=content_type,
                    source_age_seconds=source_age_seconds, stored_at=utcnow(), last_error=None,
                    lease_owner=None, lease_expires_at=None))

    def mark_unstored(
        self, file_id: int, owner: str, *, status: str, error: str,
        source_age_seconds: float | None = None, retry_after: float | None = None,
    ) -> FileRecord | None:
        """Record a failed attempt (``status`` ``failed``, ``expired`` or ``pending`` to
        retry) and release the lease; returns the row, or ``None`` if ``owner`` no longer
        held it. ``retry_after`` (seconds) keeps the queue from handing it out before then."""
        assert status in ("failed", "expired", "pending")
        now = utcnow()
        return self._update_returning(
            update(OutputFile)
            .where(OutputFile.id == file_id, OutputFile.status != "stored",
                   or_(OutputFile.lease_owner == owner, OutputFile.lease_owner.is_(None)))
            .values(status=status, last_error=error[:2000], lease_owner=None,
                    lease_expires_at=None, source_age_seconds=source_age_seconds,
                    available_at=now + timedelta(seconds=retry_after or 0)))

    def mark_prediction_files_expired(self, prediction_id: str, error: str) -> int:
        """Mark every not-yet-stored file of a prediction ``expired``; returns how many."""
        with self.sessions.begin() as s:
            result = s.execute(
                update(OutputFile)
                .where(and_(OutputFile.prediction_id == prediction_id,
                            OutputFile.status != "stored",
                            OutputFile.lease_owner.is_(None)))
                .values(status="expired", last_error=error)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]


    def claim_next(self, owner: str, lease_seconds: float) -> FileRecord | None:
        """Claim the oldest claimable ``pending`` file (its ``available_at`` has come and no
        live lease holds it) for ``owner``; ``None`` when the queue has nothing to hand out.

        On PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP LOCKED``, so many
        workers on many machines claim disjoint files without waiting on each other; on
        SQLite the database's single writer lock serialises claims.
        """
        now = utcnow()
        candidate = (
            select(OutputFile.id)
            .where(OutputFile.status == "pending",
                   or_(OutputFile.available_at.is_(None), OutputFile.available_at <= now),
                   or_(OutputFile.lease_expires_at.is_(None), OutputFile.lease_expires_at < now))
            .order_by(OutputFile.available_at, OutputFile.id)
            .limit(1)
        )
        if self.dialect == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        return self._update_returning(
            update(OutputFile)
            .where(OutputFile.id == candidate.scalar_subquery())
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=OutputFile.attempts + 1))

    def release_leases(self, owners: Iterable[str]) -> int:
        """Drop the leases of ``owners`` (processes known to be dead); returns how many."""
        owners = list(owners)
        if not owners:
            return 0
        with self.sessions.begin() as s:
            result = s.execute(
                update(OutputFile).where(OutputFile.lease_owner.in_(owners))
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def lease_owners(self) -> list[str]:
        """Distinct owners currently holding a lease (live or lapsed)."""
        with self.sessions() as s:
            return list(s.scalars(select(OutputFile.lease_owner).where(
                OutputFile.lease_owner.is_not(None)).distinct()))

    def queue_counts(self) -> dict[str, int]:
        """Number of output files per status, e.g. ``{"pending": 3, "stored": 10}``."""
        from sqlalchemy import func

        with self.sessions() as s:
            rows = s.execute(select(OutputFile.status, func.count()).group_by(OutputFile.status))
            return {status: int(n) for status, n in rows}

    def count_unleased_pending(self) -> int:
        """Pending files no live lease holds (claimable now or after their backoff)."""
        from sqlalchemy import func

        now = utcnow()
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(OutputFile).where(
                OutputFile.status == "pending",
                or_(OutputFile.lease_expires_at.is_(None), OutputFile.lease_expires_at < now)))
                or 0)

    # ---- checkpoints --------------------------------------------------------------------

    def load_checkpoint(self, name: str) -> tuple[str | None, dict[str, Any]]:
        """``(cursor, state)`` saved under ``name``; ``(None, {})`` when there is none."""
        with self.sessions() as s:
            row = s.get(Checkpoint, name)
            return (row.cursor, dict(row.state or {})) if row else (None, {})

    def save_checkpoint(self, name: str, cursor: str | None, state: dict[str, Any]) -> None:
        """Save (insert or replace) the checkpoint ``name``."""
        stmt = self._insert(Checkpoint).values(name=name, cursor=cursor, state=state,
                                               updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
            "cursor": stmt.excluded.cursor, "state": stmt.excluded.state,
            "updated_at": stmt.excluded.updated_at})
        with self.sessions.begin() as s:
            s.execute(stmt)


def _coalesce(a: Any, b: Any) -> Any:
    from sqlalchemy import func

    return func.coalesce(a, b)
