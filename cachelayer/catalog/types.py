"""Column types of the catalog: each applies one documented rule on the way in and its
inverse on the way out, for every statement (inserts, updates, filters), so no query can
forget it.

* :class:`SafeText` / :func:`safe_string`: text under the lossless text rule of
  :mod:`cachelayer.catalog.encoding` (NUL, lone surrogates).
* :class:`SafeJSON`: JSON (``JSONB`` on PostgreSQL) with every string under that rule and
  non-finite floats as marker strings; Python ``None`` is SQL ``NULL``.
* :class:`UTCDateTime`: timezone-aware UTC in, timezone-aware UTC out (SQLite keeps naive
  text).
* :class:`StatusType`: ``output_files.status`` as a :class:`~cachelayer.catalog.records.FileStatus`.

The DDL is that of the underlying type (``VARCHAR``, ``TEXT``, ``JSON``/``JSONB``,
``TIMESTAMP``), so these types need no migration.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from cachelayer.catalog.encoding import escape_json, escape_text, unescape_json, unescape_text
from cachelayer.catalog.records import FileStatus

__all__ = ["SafeJSON", "SafeString", "SafeText", "StatusType", "UTCDateTime", "safe_string"]


class _Escaped(TypeDecorator[str]):
    impl: Any = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return escape_text(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return unescape_text(value) if isinstance(value, str) else value


class SafeText(_Escaped):
    """``TEXT`` under the lossless text rule."""

    impl = Text
    cache_ok = True


class SafeString(_Escaped):
    """``VARCHAR(n)`` under the lossless text rule (use :func:`safe_string`)."""

    impl = String
    cache_ok = True


def safe_string(length: int) -> SafeString:
    """A ``VARCHAR(length)`` column type under the lossless text rule."""
    return SafeString(length)


class SafeJSON(TypeDecorator[Any]):
    """JSON on SQLite, ``JSONB`` on PostgreSQL, under the lossless rules; ``None`` is NULL
    (so ``COALESCE`` keeps a recorded value over a removed one)."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":  # its dialect is loaded then, not for SQLite
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else escape_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else unescape_json(value)


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


class StatusType(TypeDecorator[FileStatus]):
    """``VARCHAR(16)`` holding a :class:`FileStatus` value; reads give the enum member
    (an unknown value, written by a newer cachelayer, is returned as plain text)."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return value.value if isinstance(value, FileStatus) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            return FileStatus(value)
        except ValueError:
            return value
