"""The catalog's tables as SQLAlchemy Core ``Table``s (documented for SQL users in ``docs/SCHEMA.md``).

Shape follows Rails Active Storage: ``predictions`` says what Replicate produced,
``output_files`` says where each file lives now (store, key, size, sha256) and is also the
work queue (status, lease), ``source_urls`` remembers every URL a file was ever served from
(URLs rotate when a prediction is re-read), ``checkpoints`` holds backfill progress,
``rerun_claims`` the at-most-once rerun claims, ``file_copies`` each file's copies in the
mirror stores (and the mirror queue), ``tombstones`` what stays of a deleted prediction.

Core tables, not ORM classes: every statement of the catalog is a Core statement, so no
command loads ``sqlalchemy.orm`` (about a third of SQLAlchemy's import, plus the mapping of
the classes: start-up, issue 19 item 5 and issue 21 item 5, docs/BENCHMARKS.md).
All times are timezone-aware UTC; sizes are bytes. Text and JSON columns apply the lossless
rules of :mod:`cachelayer.catalog.encoding` (see :mod:`cachelayer.catalog.types`).

PostgreSQL limits a B-tree entry to 2,704 bytes, so values of unbounded length (output
paths, URLs) are indexed there through ``md5(...)`` (uniqueness) or a hash index (lookups);
SQLite has no such limit and indexes the columns themselves (revision 0003).
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
)

from cachelayer.catalog.records import FILE_STATUSES, FileRecord, FileStatus
from cachelayer.catalog.types import SafeJSON, SafeText, StatusType, UTCDateTime, safe_string

__all__ = [
    "CHECKPOINTS",
    "FILE_COPIES",
    "FILE_COLUMNS",
    "FILE_STATUSES",
    "METADATA",
    "OUTPUT_FILES",
    "PREDICTIONS",
    "RERUN_CLAIMS",
    "SERVER_STATE",
    "SOURCE_URLS",
    "TOMBSTONES",
    "UTCDateTime",
    "WEBHOOK_DELIVERIES",
]

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
#: Longest prediction id the catalog records (Replicate's ids are 26 characters).
MAX_PREDICTION_ID = 64
#: Longest model name the catalog records, in UTF-8 bytes (indexed; Replicate's are ``owner/name``).
MAX_MODEL = 1024
#: Longest ``webhook-id`` recorded (Standard Webhooks ids are ``msg_`` + 27 characters).
MAX_WEBHOOK_ID = 255

#: Every table of the catalog (``create_fresh``, Alembic's ``target_metadata``).
METADATA = MetaData()


def _utc(name: str, *, nullable: bool = True, index: bool = False) -> Column[object]:
    return Column(name, UTCDateTime, nullable=nullable, index=index)


#: One Replicate prediction as last seen.
PREDICTIONS = Table(
    "predictions",
    METADATA,
    Column("id", safe_string(MAX_PREDICTION_ID), primary_key=True),
    Column("model", SafeText, index=True),
    Column("version", SafeText),
    Column("status", safe_string(16), nullable=False),
    Column("source", SafeText),
    Column("input", SafeJSON),
    Column("output", SafeJSON),
    Column("durable_output", SafeJSON),
    Column("error", SafeText),
    _utc("created_at", index=True),
    _utc("started_at"),
    _utc("completed_at"),
    Column("data_removed", Boolean, nullable=False, default=False),
    Column(
        "rerun_of",
        safe_string(MAX_PREDICTION_ID),
        ForeignKey("predictions.id", ondelete="SET NULL"),
        index=True,
    ),
    _utc("recorded_at", nullable=False),
    _utc("updated_at", nullable=False),
)

#: One file of one prediction and its object; also the queue.
OUTPUT_FILES = Table(
    "output_files",
    METADATA,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column(
        "prediction_id",
        safe_string(MAX_PREDICTION_ID),
        ForeignKey("predictions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("output_path", SafeText, nullable=False),
    Column("source_url", SafeText, nullable=False),
    Column("store", safe_string(255), nullable=False),
    Column("key", safe_string(1024), nullable=False),
    Column("size", BigInteger),
    Column("sha256", safe_string(64)),
    Column("content_type", SafeText),
    Column("status", StatusType, nullable=False, default=FileStatus.PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", SafeText),
    Column("source_age_seconds", Float),
    _utc("stored_at"),
    # copied from the prediction so listings and stats need no join at millions of rows
    Column("model", SafeText),
    _utc("created_at"),
    # queue: who holds the file and until when; when it may be tried again
    Column("lease_owner", safe_string(64)),
    _utc("lease_expires_at"),
    _utc("available_at"),
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

#: Every source URL a file was served from, so rotated URLs still resolve.
SOURCE_URLS = Table(
    "source_urls",
    METADATA,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("output_file_id", BigInteger, ForeignKey("output_files.id", ondelete="CASCADE"), nullable=False),
    Column("url", SafeText, nullable=False),
    _utc("seen_at", nullable=False),
    UniqueConstraint("output_file_id", "url", name="uq_source_urls_file_url").ddl_if(dialect="sqlite"),
    Index("ix_source_urls_url", "url").ddl_if(dialect="sqlite"),  # PostgreSQL: below
)

# PostgreSQL: uniqueness through md5() of the unbounded column (see the module docstring)
Index(
    "uq_output_files_prediction_path",
    OUTPUT_FILES.c.prediction_id,
    func.md5(OUTPUT_FILES.c.output_path),
    unique=True,
).ddl_if(dialect="postgresql")
Index(
    "uq_source_urls_file_url", SOURCE_URLS.c.output_file_id, func.md5(SOURCE_URLS.c.url), unique=True
).ddl_if(dialect="postgresql")

# PostgreSQL: the URL lookups are hash indexes (migration 0003). Written as DDL rather than
# ``Index(..., postgresql_using="hash")``, whose keyword makes SQLAlchemy import PostgreSQL's
# whole dialect as this module loads: 50 ms of every command's start-up on SQLite too.
for _table, _index, _column in (
    (OUTPUT_FILES, "ix_output_files_source_url", "source_url"),
    (SOURCE_URLS, "ix_source_urls_url", "url"),
):
    _ddl = DDL(f"CREATE INDEX {_index} ON {_table.name} USING hash ({_column})")  # type: ignore[no-untyped-call]
    event.listen(_table, "after_create", _ddl.execute_if(dialect="postgresql"))

#: The ``output_files`` columns a :class:`FileRecord` is built from, for plain-column
#: selects (listings stream millions of rows).
FILE_COLUMNS = [OUTPUT_FILES.c[name] for name in FileRecord.__dataclass_fields__]

#: One file's copy in one mirror store (revision 0009); also the mirror queue (``status``,
#: ``attempts``, backoff in ``available_at``, lease). The primary copy stays recorded on its
#: ``output_files`` row (``store``, ``key``).
FILE_COPIES = Table(
    "file_copies",
    METADATA,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("file_id", BigInteger, ForeignKey("output_files.id", ondelete="CASCADE"), nullable=False),
    Column("store", safe_string(255), nullable=False),
    Column("key", safe_string(1024), nullable=False),
    Column("sha256", safe_string(64)),
    Column("size", BigInteger),
    Column("status", StatusType, nullable=False, default=FileStatus.PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", SafeText),
    _utc("available_at"),
    Column("lease_owner", safe_string(64)),
    _utc("lease_expires_at"),
    _utc("updated_at", nullable=False),
    UniqueConstraint("file_id", "store", name="uq_file_copies_file_store"),
    Index("ix_file_copies_queue", "status", "available_at"),
)

#: Progress of a named long-running job (the backfill scan): cursor and state.
CHECKPOINTS = Table(
    "checkpoints",
    METADATA,
    Column("name", safe_string(255), primary_key=True),
    Column("cursor", SafeText),
    Column("state", SafeJSON),
    _utc("updated_at", nullable=False),
)

#: One named value shared by every process of a catalog (migration 0004): the generated
#: gateway secret.
SERVER_STATE = Table(
    "server_state",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    _utc("created_at", nullable=False),
)

#: One accepted webhook delivery by its ``webhook-id`` (migrations 0004 and 0005): the
#: de-duplication row and serve's inbox. ``body`` holds the verified raw body until the
#: delivery is acted on (``processed_at`` set, ``body`` cleared); ``error`` says why a
#: delivery could not be acted on.
WEBHOOK_DELIVERIES = Table(
    "webhook_deliveries",
    METADATA,
    Column("webhook_id", String(MAX_WEBHOOK_ID), primary_key=True),
    Column("prediction_id", String(MAX_PREDICTION_ID)),
    Column("status", String(16)),
    _utc("received_at", nullable=False, index=True),
    Column("body", LargeBinary),
    _utc("processed_at", index=True),
    Column("error", Text),
)

#: A claim on rerunning a prediction whose data Replicate removed (revision 0006): who took
#: it and when, and the rerun's id once Replicate created it.
RERUN_CLAIMS = Table(
    "rerun_claims",
    METADATA,
    Column("prediction_id", safe_string(MAX_PREDICTION_ID), primary_key=True),
    Column("owner", safe_string(64), nullable=False),
    _utc("claimed_at", nullable=False),
    Column("rerun_id", safe_string(MAX_PREDICTION_ID)),
)


#: What stays of a deleted prediction (revision 0007): its id and model, why and when it was
#: deleted, how many files and bytes that freed. The one home of "this prediction is
#: deleted": no writer records or queues a prediction that has a row here
#: (:func:`cachelayer.catalog.tombstones.refuse_deleted_in`). ``deleted_at`` is ``NULL``
#: while the delete is under way (its files ``deleting``): a rerun of the delete or the
#: sweep finishes it (:mod:`cachelayer.delete`).
TOMBSTONES = Table(
    "tombstones",
    METADATA,
    Column("prediction_id", safe_string(MAX_PREDICTION_ID), primary_key=True),
    Column("model", SafeText),
    Column("reason", SafeText),
    _utc("requested_at", nullable=False),
    _utc("deleted_at", index=True),
    Column("files", Integer, nullable=False, default=0),
    Column("bytes_freed", BigInteger, nullable=False, default=0),
)
