"""Expiry policy: how old a source URL is, and when that is worth a warning.

Facts (shared/reference/replicate-api.md, from Replicate's data-retention docs): predictions
created through the API lose their input, output and files one hour after they finish
(``data_removed`` becomes true, ``output`` null, file URLs answer 404); predictions created
on the web keep them. A file URL can also stop answering sooner (the ExpiredDownloadUrlError
note in shared/seeds/), which is why a failed download re-reads the prediction first.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from cachelayer.catalog.queries import parse_time
from cachelayer.config import REPLICATE_RETENTION_SECONDS

log = logging.getLogger("cachelayer")


def source_age(prediction: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds since the prediction completed (else since it was created), or ``None``."""
    stamp: datetime | None = parse_time(prediction.get("completed_at")) or parse_time(
        prediction.get("created_at")
    )
    if stamp is None:
        return None
    return max(0.0, (time.time() if now is None else now) - stamp.timestamp())


def is_removed(prediction: dict[str, Any]) -> bool:
    """Whether Replicate has removed the prediction's data (``data_removed`` true)."""
    return bool(prediction.get("data_removed"))


def warn_if_late(prediction: dict[str, Any], age: float | None, margin: float) -> bool:
    """Log a warning when an API prediction is persisted within ``margin`` seconds of
    Replicate's one-hour removal (or after it). Returns whether it warned."""
    if age is None or prediction.get("source") == "web":
        return False
    left = REPLICATE_RETENTION_SECONDS - age
    if left < margin:
        log.warning(
            "prediction %s is %.0f s old: Replicate removes API prediction files %.0f s after "
            "completion (%.0f s left); persist sooner",
            prediction.get("id"), age, REPLICATE_RETENTION_SECONDS, max(left, 0.0),
        )
        return True
    return False
