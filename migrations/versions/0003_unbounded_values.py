"""take every value Replicate can send: unbounded text columns, hashed indexes, lossless text rule

PostgreSQL (issue 8.5): ``predictions.model``, ``version``, ``source`` and
``output_files.output_path``, ``content_type``, ``model`` become ``text`` (a Content-Type
over 255 characters or an output key over 1,024 characters no longer aborts a persist).
B-tree entries are limited to 2,704 bytes, so the unique constraints on
``(prediction_id, output_path)`` and ``(output_file_id, url)`` become unique indexes on
``md5()`` of the long column, and the URL lookup indexes become hash indexes (equality
only, which is all ``resolve`` needs). Changing ``varchar`` to ``text`` rewrites nothing.
SQLite enforces neither lengths nor an index entry limit: no DDL there.

Data, both databases:

* values written before the text rule (docs/SCHEMA.md, "Values the catalog changes") that
  contain a backslash, ``u`` and four lowercase hex digits are escaped, so they read back
  unchanged; a NUL or lone surrogate SQLite kept inside JSON is escaped too;
* ``data:`` URIs move to the redacted form of ``cachelayer.datauri``: their payloads are
  removed from ``predictions.output``/``durable_output``, and the recorded source URL of a
  stored file (formerly ``data:<type>;sha256,<hex of the URI text>``) becomes
  ``data:<type>;sha256=<hex of the bytes>,`` (the file's recorded ``sha256``). Files not
  stored keep the old form until their prediction is recorded again.

Downgrade restores the PostgreSQL types and indexes (it fails if a longer value was stored
meanwhile); the data changes are kept (the old code reads them as text).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cachelayer.catalog.encoding import escape_json, escape_text
from cachelayer.datauri import redact_data_uris

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WIDENED = {
    "predictions": [("model", 255), ("version", 128), ("source", 8)],
    "output_files": [("output_path", 1024), ("content_type", 255), ("model", 255)],
}
_LEGACY_DATA = re.compile(r"data:([^,;]*);sha256,[0-9a-f]{64}")
_MEDIA = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_BATCH = 500


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _suspects(conn: Any, table: str, key: str, column: str, is_json: bool) -> list[Any]:
    """Rows whose ``column`` holds ``\\u`` (an escape-like text, or JSON's escape of a NUL)
    or ``data:``."""
    text = f"CAST({column} AS TEXT)" if is_json and conn.dialect.name == "postgresql" else column
    sql = f"SELECT {key}, {column} FROM {table} WHERE {text} LIKE '%!\\u%' ESCAPE '!'"  # noqa: S608
    if is_json:
        sql += f" OR {text} LIKE '%data:%'"
    col = sa.column(column, _json() if is_json else sa.Text())
    stmt = sa.text(sql).columns(sa.column(key), col)
    return list(conn.execute(stmt))


def _escape_existing(conn: Any) -> None:
    targets = [
        ("predictions", "id", "input", True),
        ("predictions", "id", "output", True),
        ("predictions", "id", "durable_output", True),
        ("predictions", "id", "error", False),
        ("output_files", "id", "output_path", False),
        ("output_files", "id", "source_url", False),
        ("output_files", "id", "last_error", False),
        ("source_urls", "id", "url", False),
        ("checkpoints", "name", "cursor", False),
        ("checkpoints", "name", "state", True),
    ]
    for table, key, column, is_json in targets:
        updates = []
        for row_key, value in _suspects(conn, table, key, column, is_json):
            if value is None:
                continue
            if is_json:
                # the stored value is the original: redact data: payloads (outputs), then escape
                new = redact_data_uris(value) if column in ("output", "durable_output") else value
                new = escape_json(new)
                if new == value:
                    continue
            else:
                new = escape_text(value)
                if new == value:
                    continue
            updates.append({"k": row_key, "v": new})
        col_type = _json() if is_json else sa.Text()
        tbl = sa.table(table, sa.column(key), sa.column(column, col_type))
        value = sa.bindparam("v", type_=col_type)
        stmt = tbl.update().where(tbl.c[key] == sa.bindparam("k")).values({column: value})
        for i in range(0, len(updates), _BATCH):
            conn.execute(stmt, updates[i : i + _BATCH])


def _redact_legacy_data_urls(conn: Any) -> None:
    files = list(
        conn.execute(
            sa.text(
                "SELECT id, source_url, sha256 FROM output_files "
                "WHERE status = 'stored' AND sha256 IS NOT NULL AND source_url LIKE 'data:%'"
            )
        )
    )
    for file_id, url, sha in files:
        m = _LEGACY_DATA.fullmatch(url)
        if not m:
            continue
        media = m.group(1).lower() if _MEDIA.fullmatch(m.group(1)) else "text/plain"
        new = f"data:{media};sha256={sha},"
        params = {"new": new, "id": file_id, "old": url}
        conn.execute(sa.text("UPDATE output_files SET source_url = :new WHERE id = :id"), params)
        conn.execute(sa.text("DELETE FROM source_urls WHERE output_file_id = :id AND url = :new"), params)
        conn.execute(
            sa.text("UPDATE source_urls SET url = :new WHERE output_file_id = :id AND url = :old"), params
        )


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for table, columns in _WIDENED.items():
            for column, _length in columns:
                op.alter_column(table, column, type_=sa.Text())
        op.drop_constraint("uq_output_files_prediction_path", "output_files", type_="unique")
        op.execute(
            "CREATE UNIQUE INDEX uq_output_files_prediction_path "
            "ON output_files (prediction_id, md5(output_path))"
        )
        op.drop_index("ix_output_files_source_url", table_name="output_files")
        op.execute("CREATE INDEX ix_output_files_source_url ON output_files USING hash (source_url)")
        op.drop_constraint("uq_source_urls_file_url", "source_urls", type_="unique")
        op.execute("CREATE UNIQUE INDEX uq_source_urls_file_url ON source_urls (output_file_id, md5(url))")
        op.drop_index("ix_source_urls_url", table_name="source_urls")
        op.execute("CREATE INDEX ix_source_urls_url ON source_urls USING hash (url)")
    _escape_existing(conn)
    _redact_legacy_data_urls(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    op.drop_index("ix_source_urls_url", table_name="source_urls")
    op.create_index("ix_source_urls_url", "source_urls", ["url"])
    op.drop_index("uq_source_urls_file_url", table_name="source_urls")
    op.create_unique_constraint("uq_source_urls_file_url", "source_urls", ["output_file_id", "url"])
    op.drop_index("ix_output_files_source_url", table_name="output_files")
    op.create_index("ix_output_files_source_url", "output_files", ["source_url"])
    op.drop_index("uq_output_files_prediction_path", table_name="output_files")
    op.create_unique_constraint(
        "uq_output_files_prediction_path", "output_files", ["prediction_id", "output_path"]
    )
    for table, columns in _WIDENED.items():
        for column, length in columns:
            op.alter_column(table, column, type_=sa.String(length))
