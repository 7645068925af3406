"""SQLAlchemy 2 models of the catalog (documented for SQL users in ``docs/SCHEMA.md``).

Shape follows Rails Active Storage: ``predictions`` says what Replicate produced,
``output_files`` says where each file lives now (store, key, size, sha256) and is also the
work queue (status, lease), ``source_urls`` remembers every URL a file was ever served from
(URLs rotate when a prediction is re-read), ``checkpoints`` holds backfill progress,
``rerun_claims`` the at-most-once rerun claims, ``file_copies`` each file's copies in the
mirror stores (and the mirror queue).
All times are timezone-aware UTC; sizes are bytes. Text and JSON columns apply the lossless
rules of :mod:`cachelayer.catalog.encoding` (see :mod:`cachelayer.catalog.types`).

PostgreSQL limits a B-tree entry to 2,704 bytes, so values of unbounded length (output
paths, URLs) are indexed there through ``md5(...)`` (uniqueness) or a hash index (lookups);
SQLite has no such limit and indexes the columns themselves (revision 0003).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.catalog.types import SafeJSON, SafeText, StatusType, UTCDateTime, safe_string

__all__ = [
    "FILE_COLUMNS",
    "FILE_STATUSES",
    "Base",
    "Checkpoint",
    "FileCopy",
    "OutputFile",
    "Prediction",
    "RerunClaimRow",
    "ServerStateValue",
    "SourceUrl",
    "UTCDateTime",
    "WebhookDeliveryRow",
]

#: The values of :class:`~cachelayer.catalog.records.FileStatus`, in their documented order.
FILE_STATUSES = tuple(s.value for s in FileStatus)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
#: Longest prediction id the catalog records (Replicate's ids are 26 characters).
MAX_PREDICTION_ID = 64
#: Longest model name the catalog records, in UTF-8 bytes (indexed; Replicate's are ``owner/name``).
MAX_MODEL = 1024


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime}


class Prediction(Base):
    """One Replicate prediction as last seen (table ``predictions``)."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(safe_string(MAX_PREDICTION_ID), primary_key=True)
    model: Mapped[str | None] = mapped_column(SafeText, index=True)
    version: Mapped[str | None] = mapped_column(SafeText)
    status: Mapped[str] = mapped_column(safe_string(16))
    source: Mapped[str | None] = mapped_column(SafeText)
    input: Mapped[Any | None] = mapped_column(SafeJSON)
    output: Mapped[Any | None] = mapped_column(SafeJSON)
    durable_output: Mapped[Any | None] = mapped_column(SafeJSON)
    error: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    data_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    rerun_of: Mapped[str | None] = mapped_column(
        safe_string(MAX_PREDICTION_ID), ForeignKey("predictions.id", ondelete="SET NULL"), index=True
    )
    recorded_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutputFile(Base):
    """One file of one prediction and its object (table ``output_files``; also the queue)."""

    __tablename__ = "output_files"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        safe_string(MAX_PREDICTION_ID), ForeignKey("predictions.id", ondelete="CASCADE")
    )
    output_path: Mapped[str] = mapped_column(SafeText)
    source_url: Mapped[str] = mapped_column(SafeText)
    store: Mapped[str] = mapped_column(safe_string(255))
    key: Mapped[str] = mapped_column(safe_string(1024))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(safe_string(64))
    content_type: Mapped[str | None] = mapped_column(SafeText)
    status: Mapped[FileStatus] = mapped_column(StatusType, default=FileStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(SafeText)
    source_age_seconds: Mapped[float | None] = mapped_column(Float)
    stored_at: Mapped[datetime | None]
    # copied from the prediction so listings and stats need no join at millions of rows
    model: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[datetime | None]
    # queue: who holds the file and until when; when it may be tried again
    lease_owner: Mapped[str | None] = mapped_column(safe_string(64))
    lease_expires_at: Mapped[datetime | None]
    available_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("prediction_id", "output_path", name="uq_output_files_prediction_path").ddl_if(
            dialect="sqlite"
        ),
        Index("ix_output_files_model_created", "model", "created_at", "id"),
        Index("ix_output_files_created", "created_at", "id"),
        Index("ix_output_files_status_created", "status", "created_at", "id"),
        Index("ix_output_files_queue", "status", "available_at"),
        Index("ix_output_files_source_url", "source_url").ddl_if(dialect="sqlite"),  # PostgreSQL: below
        # the gateway finds a file by its object key on every cache miss (migration 0004)
        Index("ix_output_files_key", "key"),
    )


class SourceUrl(Base):
    """Every source URL a file was served from, so rotated URLs still resolve."""

    __tablename__ = "source_urls"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    output_file_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("output_files.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(SafeText)
    seen_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("output_file_id", "url", name="uq_source_urls_file_url").ddl_if(dialect="sqlite"),
        Index("ix_source_urls_url", "url").ddl_if(dialect="sqlite"),  # PostgreSQL: below
    )


# PostgreSQL: uniqueness through md5() of the unbounded column (see the module docstring)
Index(
    "uq_output_files_prediction_path",
    OutputFile.prediction_id,
    func.md5(OutputFile.output_path),
    unique=True,
).ddl_if(dialect="postgresql")
Index("uq_source_urls_file_url", SourceUrl.output_file_id, func.md5(SourceUrl.url), unique=True).ddl_if(
    dialect="postgresql"
)

# PostgreSQL: the URL lookups are hash indexes (migration 0003). Written as DDL rather than
# ``Index(..., postgresql_using="hash")``, whose keyword makes SQLAlchemy import PostgreSQL's
# whole dialect as this module loads: 50 ms of every command's start-up on SQLite too.
for _model, _index, _column in (
    (OutputFile, "ix_output_files_source_url", "source_url"),
    (SourceUrl, "ix_source_urls_url", "url"),
):
    _ddl = DDL(f"CREATE INDEX {_index} ON {_model.__tablename__} USING hash ({_column})")  # type: ignore[no-untyped-call]
    event.listen(_model.__table__, "after_create", _ddl.execute_if(dialect="postgresql"))

#: The ``output_files`` columns a :class:`FileRecord` is built from, for plain-column
#: selects (no ORM identity map, so listings can stream millions of rows).
FILE_COLUMNS = [OutputFile.__table__.c[name] for name in FileRecord.__dataclass_fields__]


class FileCopy(Base):
    """One file's copy in one mirror store (table ``file_copies``, revision 0009); also the
    mirror queue (``status``, ``attempts``, backoff in ``available_at``, lease). The primary
    copy stays recorded on its ``output_files`` row (``store``, ``key``)."""

    __tablename__ = "file_copies"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("output_files.id", ondelete="CASCADE"))
    store: Mapped[str] = mapped_column(safe_string(255))
    key: Mapped[str] = mapped_column(safe_string(1024))
    sha256: Mapped[str | None] = mapped_column(safe_string(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[FileStatus] = mapped_column(StatusType, default=FileStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(SafeText)
    available_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(safe_string(64))
    lease_expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("file_id", "store", name="uq_file_copies_file_store"),
        Index("ix_file_copies_queue", "status", "available_at"),
    )


class Checkpoint(Base):
    """Progress of a named long-running job (the backfill scan): cursor and state."""

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(safe_string(255), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(SafeText)
    state: Mapped[Any | None] = mapped_column(SafeJSON)
    updated_at: Mapped[datetime]


class ServerStateValue(Base):
    """One named value shared by every process of a catalog (table ``server_state``,
    migration 0004): the generated gateway secret."""

    __tablename__ = "server_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


#: Longest ``webhook-id`` recorded (Standard Webhooks ids are ``msg_`` + 27 characters).
MAX_WEBHOOK_ID = 255


class WebhookDeliveryRow(Base):
    """One accepted webhook delivery by its ``webhook-id`` (table ``webhook_deliveries``,
    migrations 0004 and 0005): the de-duplication row and serve's inbox. ``body`` holds the
    verified raw body until the delivery is acted on (``processed_at`` set, ``body``
    cleared); ``error`` says why a delivery could not be acted on."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(String(MAX_WEBHOOK_ID), primary_key=True)
    prediction_id: Mapped[str | None] = mapped_column(String(MAX_PREDICTION_ID))
    status: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(index=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    error: Mapped[str | None] = mapped_column(Text)


class RerunClaimRow(Base):
    """A claim on rerunning a prediction whose data Replicate removed (table
    ``rerun_claims``, revision 0006): who took it and when, and the rerun's id once
    Replicate created it."""

    __tablename__ = "rerun_claims"

    prediction_id: Mapped[str] = mapped_column(safe_string(MAX_PREDICTION_ID), primary_key=True)
    owner: Mapped[str] = mapped_column(safe_string(64))
    claimed_at: Mapped[datetime]
    rerun_id: Mapped[str | None] = mapped_column(safe_string(MAX_PREDICTION_ID))
