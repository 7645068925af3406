""":class:`FileFilter`: which output files a listing, export, statistic or verify covers.

One value instead of the five keyword arguments (``model, status, since, until,
prediction_id``) that listings, stats, verify, the facade and the CLI used to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement

from cachelayer.catalog.models import OUTPUT_FILES
from cachelayer.catalog.records import FileStatus
from cachelayer.errors import ConfigError

__all__ = ["FileFilter"]

_T = OUTPUT_FILES.c


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigError(f"since/until must be datetimes, got {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True)
class FileFilter:
    """Conditions on output files, combined with AND; ``None`` means "any".

    ``model``: ``owner/name``. ``status``: a :class:`FileStatus` (its string value is
    accepted). ``since <= created_at < until``: the prediction's creation time, as
    timezone-aware datetimes (naive ones are taken as UTC); files whose ``created_at`` is
    unknown never match a time condition. ``prediction_id``: one prediction's files.

    Raises :class:`~cachelayer.errors.ConfigError` for an unknown status or a non-datetime
    time.
    """

    model: str | None = None
    status: FileStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    prediction_id: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not isinstance(self.status, FileStatus):
            try:
                object.__setattr__(self, "status", FileStatus.parse(self.status))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        object.__setattr__(self, "since", _utc(self.since))
        object.__setattr__(self, "until", _utc(self.until))

    @classmethod
    def of(cls, where: FileFilter | None = None, **conditions: Any) -> FileFilter:
        """``where`` (default: no condition) with the given keyword ``conditions`` (the old
        ``model=..., status=..., since=..., until=..., prediction_id=...`` arguments) on top;
        ``None`` keywords are ignored. Raises :class:`ConfigError` for an unknown keyword."""
        names = {f.name for f in fields(cls)}
        unknown = set(conditions) - names
        if unknown:
            raise ConfigError(f"unknown file filter(s): {', '.join(sorted(unknown))}")
        base = where if where is not None else cls()
        given = {k: v for k, v in conditions.items() if v is not None}
        return replace(base, **given) if given else base

    @property
    def dated_only(self) -> bool:
        """Whether a time condition excludes files with an unknown ``created_at``."""
        return self.since is not None or self.until is not None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions on ``output_files`` (for the catalog's queries)."""
        conds: list[ColumnElement[bool]] = []
        if self.model is not None:
            conds.append(_T.model == self.model)
        if self.status is not None:
            conds.append(_T.status == self.status)
        if self.since is not None:
            conds.append(_T.created_at >= self.since)
        if self.until is not None:
            conds.append(_T.created_at < self.until)
        if self.prediction_id is not None:
            conds.append(_T.prediction_id == self.prediction_id)
        return conds
