"""SQLAlchemy 2 models of the catalog (documented for SQL users in ``docs/SCHEMA.md``).

Shape follows Rails Active Storage: ``predictions`` says what Replicate produced,
``output_files`` says where each file lives now (store, key, size, sha256) and is also the
work queue (status, lease), ``source_urls`` remembers every URL a file was ever served from
(URLs rotate when a prediction is re-read), ``checkpoints`` holds backfill progress.
All times are timezone-aware UTC; sizes are bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Status of an output file. ``pending``: waiting to be copied (or in flight under a lease);
#: ``stored``: the object exists and matches size/sha256; ``expired``: the source is gone for
#: good (data removed); ``failed``: copying failed for another reason (see ``last_error``).
FILE_STATUSES = ("pending", "stored", "expired", "failed")


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime`` that always returns timezone-aware UTC (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# none_as_null: Python None is SQL NULL, so COALESCE keeps recorded values over removed ones
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime}


class Prediction(Base):
    """One Replicate prediction as last seen (table ``predictions``)."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str | None] = mapped_column(String(255), index=True)
    version: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(8))
    input: Mapped[Any | None] = mapped_column(JSONType)
    output: Mapped[Any | None] = mapped_column(JSONType)
    durable_output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    data_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    rerun_of: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("predictions.id", ondelete="SET NULL"), index=True
    )
    recorded_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutputFile(Base):
    """One file of one prediction and its object (table ``output_files``; also the queue)."""

    __tablename__ = "output_files"
    __table_args__ = (
        UniqueConstraint("prediction_id", "output_path", name="uq_output_files_prediction_path"),
        Index("ix_output_files_model_created", "model", "created_at", "id"),
        Index("ix_output_files_created", "created_at", "id"),
        Index("ix_output_files_status_created", "status", "created_at", "id"),
        Index("ix_output_files_queue", "status", "available_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("predictions.id", ondelete="CASCADE")
    )
    output_path: Mapped[str] = mapped_column(String(1024))
    source_url: Mapped[str] = mapped_column(Text, index=True)
    store: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    source_age_seconds: Mapped[float | None] = mapped_column(Float)
    stored_at: Mapped[datetime | None]
    # copied from the prediction so listings and stats need no join at millions of rows
    model: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None]
    # queue: who holds the file and until when; when it may be tried again
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    available_at: Mapped[datetime | None]


class SourceUrl(Base):
    """Every source URL a file was served from, so rotated URLs still resolve."""

    __tablename__ = "source_urls"
    __table_args__ = (UniqueConstraint("output_file_id", "url", name="uq_source_urls_file_url"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    output_file_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("output_files.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text, index=True)
    seen_at: Mapped[datetime]


class Checkpoint(Base):
    """Progress of a named long-running job (the backfill scan): cursor and counts."""

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    state: Mapped[Any | None] = mapped_column(JSONType)
    updated_at: Mapped[datetime]
