"""Expiry policy: how old a source URL is, when that is worth a warning, and whether a
recorded prediction's files may still be fetched.

Facts (shared/reference/replicate-api.md, from Replicate's data-retention docs): predictions
created through the API lose their input, output and files one hour after they finish
(``data_removed`` becomes true, ``input`` and ``output`` null, file URLs answer 404);
predictions created on the web keep them. A file URL can also stop answering sooner (the
ExpiredDownloadUrlError note in shared/seeds/), which is why a failed download re-reads the
prediction first.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from cachelayer.config import REPLICATE_RETENTION_SECONDS
from cachelayer.prediction import Prediction

__all__ = ["retrievable", "source_age", "warn_if_late"]

log = logging.getLogger("cachelayer")


def source_age(finished_at: datetime | None, now: float | None = None) -> float | None:
    """Seconds since ``finished_at`` (a prediction's completion, else creation), or ``None``."""
    if finished_at is None:
        return None
    return max(0.0, (time.time() if now is None else now) - finished_at.timestamp())


def warn_if_late(prediction: Prediction, margin: float, now: float | None = None) -> bool:
    """Log a warning when an API prediction is persisted within ``margin`` seconds of
    Replicate's one-hour removal (or after it). Returns whether it warned."""
    age = source_age(prediction.finished_at, now)
    if age is None or prediction.source == "web":
        return False
    left = REPLICATE_RETENTION_SECONDS - age
    if left < margin:
        log.warning(
            "prediction %s is %.0f s old: Replicate removes API prediction files %.0f s after "
            "completion (%.0f s left); persist sooner",
            prediction.id,
            age,
            REPLICATE_RETENTION_SECONDS,
            max(left, 0.0),
        )
        return True
    return False


def retrievable(
    *,
    data_removed: bool,
    has_output: bool,
    source: str | None,
    finished_at: datetime | None,
    now: datetime | None = None,
) -> bool:
    """Whether Replicate may still serve a prediction's files: it has an output, its data
    was not removed, and it was created on the web (kept) or finished less than
    ``REPLICATE_RETENTION_SECONDS`` (one hour) before ``now``."""
    if data_removed or not has_output:
        return False
    if source == "web":
        return True
    if finished_at is None:
        return False
    now = now or datetime.now(timezone.utc)
    return (now - finished_at).total_seconds() < REPLICATE_RETENTION_SECONDS
