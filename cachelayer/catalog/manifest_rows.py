"""The rows a prediction's manifest describes (``cachelayer.manifests``), both ways: read a
prediction's whole record (its row, its files, every source URL of each file) in one
transaction, and write such a record back into a catalog being rebuilt from the bucket.

Restored rows keep what the catalog recorded: the prediction's columns, each file's id,
status, key, store, size, sha256, content type, attempts, error and times, and the
``source_urls`` aliases. ``rerun_of`` references a prediction that may come later in a
listing, so it is set by :meth:`ManifestRows.link_reruns` once every prediction is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, text, update

from cachelayer.catalog.models import (
    FILE_COLUMNS,
    METADATA,
    OUTPUT_FILES,
    PREDICTIONS,
    SERVER_STATE,
    SOURCE_URLS,
)
from cachelayer.catalog.predictions import check_prediction_id
from cachelayer.catalog.records import FileRecord, PredictionRecord, RecordedPrediction
from cachelayer.catalog.session import Database, by_key, chunked, utcnow

__all__ = ["REBUILDING", "ManifestRows", "RecordedPrediction"]

_P = PREDICTIONS
_F = OUTPUT_FILES
_A = SOURCE_URLS
_S = SERVER_STATE
#: ``server_state`` row present while a rebuild runs, so an interrupted one can resume.
REBUILDING = "rebuild_in_progress"


class ManifestRows:
    """Reads and restores whole predictions (see the module docstring); every statement
    through the one :class:`~cachelayer.catalog.session.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self, prediction_id: str) -> RecordedPrediction | None:
        """The prediction ``prediction_id`` with its files and their aliases, read in one
        transaction; ``None`` when the catalog does not hold it."""

        def work(s: Connection) -> RecordedPrediction | None:
            row = by_key(s, _P, prediction_id)
            if row is None:
                return None
            files = [
                FileRecord(**r._mapping)
                for r in s.execute(
                    select(*FILE_COLUMNS)
                    .where(_F.c.prediction_id == prediction_id)
                    .order_by(_F.c.output_path)
                )
            ]
            aliases: dict[int, list[str]] = {f.id: [] for f in files}
            if files:
                for fid, url in s.execute(
                    select(_A.c.output_file_id, _A.c.url)
                    .where(_A.c.output_file_id.in_(list(aliases)))
                    .order_by(_A.c.id)
                ):
                    aliases[fid].append(url)
            return RecordedPrediction(PredictionRecord.of(row), files, aliases)

        return self.db.read(work)

    def prediction_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` prediction ids after ``after`` (``None``: from the first), in id
        order: a keyset walk over every prediction."""

        def work(s: Connection) -> list[str]:
            stmt = select(_P.c.id).order_by(_P.c.id).limit(limit)
            if after is not None:
                stmt = stmt.where(_P.c.id > after)
            return list(s.execute(stmt).scalars())

        return self.db.read(work)

    def is_empty(self) -> bool:
        """Whether no table of the catalog holds a row (Alembic's own table aside)."""

        def work(s: Connection) -> bool:
            tables = METADATA.sorted_tables
            return all(s.execute(select(1).select_from(t).limit(1)).first() is None for t in tables)

        return self.db.read(work)

    def rebuilding(self) -> bool:
        """Whether a rebuild began in this catalog and did not finish (:meth:`begin_rebuild`)."""
        return (
            self.db.read(lambda s: s.execute(select(_S.c.name).where(_S.c.name == REBUILDING)).first())
            is not None
        )

    def begin_rebuild(self) -> None:
        """Mark the catalog as being rebuilt (a ``server_state`` row), unless it is already."""
        if not self.rebuilding():
            self.db.write_core(
                lambda c: c.execute(_S.insert(), {"name": REBUILDING, "value": "1", "created_at": utcnow()})
            )

    def end_rebuild(self) -> None:
        """Remove the mark of :meth:`begin_rebuild`."""
        self.db.write_core(lambda c: c.execute(_S.delete().where(_S.c.name == REBUILDING)))

    def restore(self, record: RecordedPrediction) -> bool:
        """Write ``record`` as it was recorded, in one transaction: the prediction
        (``rerun_of`` left for :meth:`link_reruns`), its files with their ids, and every
        alias; returns ``False`` (nothing written) when the prediction is there already (a
        resumed rebuild). Raises :class:`~cachelayer.errors.CatalogWriteError` (nothing
        written) for rows the catalog refuses, e.g. a file id another prediction holds."""
        p = record.prediction
        check_prediction_id(p.id, p.model)
        now = utcnow()
        values: dict[str, Any] = {
            name: getattr(p, name) for name in PredictionRecord.__dataclass_fields__ if name != "rerun_of"
        }
        values.update(rerun_of=None, recorded_at=now, updated_at=now)
        files = [
            {name: getattr(f, name) for name in FileRecord.__dataclass_fields__} | {"available_at": now}
            for f in record.files
        ]
        aliases = [
            {"output_file_id": f.id, "url": url, "seen_at": now}
            for f in record.files
            for url in dict.fromkeys(record.aliases.get(f.id, []))
        ]

        def work(c: Connection) -> bool:
            if c.execute(select(_P.c.id).where(_P.c.id == p.id)).first() is not None:
                return False
            c.execute(_P.insert(), values)
            for chunk in chunked(files):
                c.execute(_F.insert(), list(chunk))
            for chunk in chunked(aliases):
                c.execute(_A.insert(), list(chunk))
            return True

        return self.db.write_core(work, prediction_id=p.id)

    def link_reruns(self, links: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Set ``rerun_of`` of each ``(rerun id, original id)`` whose both predictions are in
        the catalog; returns the links left out (an original missing from the bucket)."""

        def work(c: Connection) -> list[tuple[str, str]]:
            wanted = {pid for pair in links for pid in pair}
            present: set[str] = set()
            for chunk in chunked(sorted(wanted)):
                present.update(c.execute(select(_P.c.id).where(_P.c.id.in_(list(chunk)))).scalars())
            left = []
            for rerun, original in links:
                if rerun in present and original in present:
                    c.execute(update(_P).where(_P.c.id == rerun).values(rerun_of=original))
                else:
                    left.append((rerun, original))
            return left

        return self.db.write_core(work) if links else []

    def reset_sequences(self) -> None:
        """PostgreSQL: move the id sequences of ``output_files`` and ``source_urls`` past the
        ids restored explicitly (SQLite takes the largest id + 1 by itself)."""
        if self.db.dialect != "postgresql":
            return

        def work(c: Connection) -> None:
            for table in ("output_files", "source_urls"):
                c.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                    )
                )

        self.db.write_core(work)
