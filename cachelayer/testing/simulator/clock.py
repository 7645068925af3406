"""The simulator's clock (:class:`SimClock`) and the time formats of the API."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time

__all__ = ["SimClock", "iso", "parse_rfc3339", "to_epoch"]

_FRACTION = re.compile(r"(\.\d{6})\d+")


class SimClock:
    """The simulator's notion of now: the real clock (monotonic) plus a manual offset.

    ``time()`` is Unix time in seconds (float), ``now()`` the same as an aware UTC
    ``datetime``; calling the clock returns ``now()``. ``advance(seconds)`` moves it forward.
    Use :meth:`ReplicateSimulator.advance` rather than this method so held requests notice.
    """

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        """Seconds added by :meth:`advance` so far."""
        return self._offset

    def time(self) -> float:
        """Now, as Unix seconds."""
        return self._wall0 + (time.monotonic() - self._mono0) + self._offset

    def now(self) -> dt.datetime:
        """Now, as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.time(), dt.timezone.utc)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    def __call__(self) -> dt.datetime:
        return self.now()


def iso(t: float | None) -> str | None:
    """Unix seconds as the API writes times (RFC 3339, UTC, microseconds, ``Z``); None stays None."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_epoch(value: dt.datetime | float | int) -> float:
    """A datetime (naive means UTC) or Unix seconds, as Unix seconds."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return float(value)


def parse_rfc3339(value: str) -> float:
    """An RFC 3339 / ISO 8601 date-time (``Z`` or an offset; none means UTC; up to 9
    fractional digits) as Unix seconds. Raises :class:`ValueError`."""
    text = _FRACTION.sub(r"\1", value.strip())
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "T" not in text and "t" not in text and " " not in text and len(text) != 10:
        raise ValueError(f"not a date-time: {value!r}")
    return to_epoch(dt.datetime.fromisoformat(text))
