"""Points in time as users type them on the command line (``--since``, ``--until``).

Two forms are accepted:

* **ISO 8601** date or date-time: ``2026-11-01``, ``2026-11-01T00:00Z``,
  ``2026-11-01 12:30:05.25+02:00``. A time without an offset is UTC; a bare date is
  midnight UTC. (Python 3.10's ``datetime.fromisoformat`` does not accept ``Z``; this
  parser does.)
* **A relative duration** meaning "that long ago": a number and a unit, ``s``, ``m``,
  ``h``, ``d`` or ``w`` (seconds, minutes, hours, days, weeks), optionally several in a
  row: ``90s``, ``30m``, ``6h``, ``7d``, ``2w``, ``1h30m``, ``1.5h``.

Pure (standard library only): the CLI wraps :func:`parse_when` in its click type
(``cachelayer.cli.options.WHEN``); the library may call it for the same forms.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["parse_duration", "parse_when"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` -> ``timedelta(seconds=5400)``. Units: ``s m h d w``.

    Raises ``ValueError`` for anything else (including an empty string) and for a
    duration longer than ``timedelta`` holds (about 2.7 million years).
    """
    value = text.strip().lower()
    if not _DURATION.match(value):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30m, 6h, 7d, 1h30m)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration out of range: {_short(text)}") from None


def parse_when(text: str | datetime, *, now: datetime | None = None) -> datetime:
    """A timezone-aware UTC datetime from ISO 8601 text or a relative duration.

    ``"7d"`` means seven days before ``now`` (default: the current time).
    ``datetime`` values pass through (naive ones are taken as UTC).
    Raises ``ValueError`` with a one-line message for text in neither form and for times
    outside years 1..9999 (in UTC).
    """
    if isinstance(text, datetime):
        return _utc(text)
    value = text.strip()
    if not value:
        raise ValueError("empty time (expected ISO 8601 like 2026-11-01T00:00Z or 6h, 7d)")
    if _DURATION.match(value.lower()):
        base = _utc(now) if now is not None else datetime.now(timezone.utc)
        try:
            return base - parse_duration(value)
        except OverflowError:
            raise ValueError(f"time out of range: {_short(text)} ago is before the year 1") from None
    iso = value
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"not a time: {_short(text)} (expected ISO 8601 like 2026-11-01T00:00Z, "
            "or a duration ago like 30m, 6h, 7d)"
        ) from None
    try:
        return _utc(parsed)
    except OverflowError:
        raise ValueError(f"time out of range: {_short(text)} is outside years 1..9999 in UTC") from None


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
