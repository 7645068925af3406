"""Typed values the catalog takes and hands out (never raw rows): :class:`FileStatus`,
:class:`NewFile`, :class:`FileRecord`, :class:`PredictionRecord`.

This module imports nothing from the rest of the catalog, so every other catalog module
(and callers outside it) can use these types without pulling in SQL.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cachelayer.model_io import JSONObject, JSONValue

__all__ = [
    "FILE_STATUSES",
    "NO_COPY",
    "FileRecord",
    "FileStatus",
    "NewFile",
    "PredictionRecord",
    "RecordedPrediction",
    "iso",
]


class FileStatus(str, enum.Enum):
    """Status of an output file (``output_files.status``).

    ``pending``: waiting to be copied (or in flight under a lease); ``stored``: the object
    exists and matches size/sha256; ``expired``: the source is gone for good (data removed);
    ``failed``: copying failed for another reason (see ``last_error``); ``deleting``: a
    delete of its prediction (:mod:`cachelayer.delete`) has begun, its object may still
    exist at ``store``/``key``; ``deleted``: its object was removed (the row stays: it
    says where the object was, and its source URLs resolve as deleted).

    Members are ``str`` and compare (and hash) equal to their value, so
    ``record.status == "stored"`` and ``{"stored": n}[record.status]`` keep working;
    ``str()`` and f-strings give the value.
    """

    PENDING = "pending"
    STORED = "stored"
    EXPIRED = "expired"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: str | FileStatus) -> FileStatus:
        """The status named ``value``. Raises ``ValueError`` naming the valid ones."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"status must be one of {', '.join(s.value for s in cls)}, got {value!r}"
            ) from None


#: The values of :class:`FileStatus`, in their documented order.
FILE_STATUSES = tuple(s.value for s in FileStatus)

#: Statuses no copier, claim or re-queue ever changes: the object is in place (``stored``)
#: or its prediction is being or was deleted.
NO_COPY = (FileStatus.STORED, FileStatus.DELETING, FileStatus.DELETED)


@dataclass(frozen=True)
class NewFile:
    """A file to record: its output path (JSON Pointer), source URL (or ``data:`` URI) and
    the key it will be stored under."""

    output_path: str
    source_url: str
    key: str


@dataclass(frozen=True)
class FileRecord:
    """One output file as recorded. ``size`` in bytes, ``source_age_seconds`` in seconds
    (age of the source URL, measured from the prediction's completion, when the download
    started); ``status`` is a :class:`FileStatus` (equal to its string value)."""

    id: int
    prediction_id: str
    output_path: str
    source_url: str
    store: str
    key: str
    status: FileStatus
    size: int | None
    sha256: str | None
    content_type: str | None
    attempts: int
    last_error: str | None
    source_age_seconds: float | None
    stored_at: datetime | None
    model: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, row: object) -> FileRecord:
        """From an ``OutputFile`` ORM row (or anything with these attributes)."""
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def to_dict(self) -> JSONObject:
        """JSON-ready dict: times as ISO 8601 UTC strings, ``status`` as its string."""
        d = _jsonable(asdict(self))
        d["status"] = str(self.status)
        return d


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as recorded; ``output`` is Replicate's raw output (source URLs;
    ``data:`` URIs in their redacted form, see docs/SCHEMA.md), ``durable_output`` the same
    shape with each stored file replaced by its object URI."""

    id: str
    model: str | None
    version: str | None
    status: str
    source: str | None
    input: JSONValue
    output: JSONValue
    durable_output: JSONValue
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    data_removed: bool
    rerun_of: str | None

    @classmethod
    def of(cls, row: object) -> PredictionRecord:
        """From a ``Prediction`` ORM row (or anything with these attributes)."""
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def to_dict(self) -> JSONObject:
        """JSON-ready dict: times as ISO 8601 UTC strings."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class RecordedPrediction:
    """A prediction as the catalog holds it (what a manifest describes,
    :mod:`cachelayer.catalog.manifest_rows`): its row, its files (by output path) and each
    file's source URLs (``aliases[file id]``, oldest first; ``data:`` URIs as recorded, in
    their redacted form)."""

    prediction: PredictionRecord
    files: list[FileRecord]
    aliases: dict[int, list[str]]


def iso(value: datetime | None) -> str | None:
    """``2026-11-20T23:05:16.760091Z`` for an aware UTC datetime; ``None`` stays ``None``."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in d.items()}
