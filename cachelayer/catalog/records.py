"""Typed, read-only records the catalog hands out (never raw rows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cachelayer.catalog.models import OutputFile, Prediction


@dataclass(frozen=True)
class FileRecord:
    """One output file as recorded. ``size`` in bytes, ``source_age_seconds`` in seconds
    (age of the source URL, measured from the prediction's completion, when the download
    started); ``status`` is one of ``pending``, ``stored``, ``expired``, ``failed``."""

    id: int
    prediction_id: str
    output_path: str
    source_url: str
    store: str
    key: str
    status: str
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
    def of(cls, row: OutputFile) -> FileRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: times as ISO 8601 UTC strings."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as recorded; ``output`` is Replicate's raw output (source URLs),
    ``durable_output`` the same shape with each file replaced by its object URI."""

    id: str
    model: str | None
    version: str | None
    status: str
    source: str | None
    input: Any
    output: Any
    durable_output: Any
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    data_removed: bool
    rerun_of: str | None

    @classmethod
    def of(cls, row: Prediction) -> PredictionRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: times as ISO 8601 UTC strings."""
        return _jsonable(asdict(self))


def iso(value: datetime | None) -> str | None:
    """``2026-11-20T23:05:16.760091Z`` for an aware UTC datetime; ``None`` stays ``None``."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in d.items()}
