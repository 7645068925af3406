"""Expiry, decided here and nowhere else: how long Replicate keeps a prediction's files,
whether a prediction's data is gone, whether a failed download means a file expired, how
old a source is, whether a recorded prediction's files may still be fetched, and the one
vocabulary for what to do about it (:data:`OnExpired`).

Facts (shared/reference/replicate-api.md, from Replicate's data-retention docs): predictions
created through the API lose their input, output and files one hour after they finish
(``data_removed`` becomes true, ``input`` and ``output`` null, file URLs answer 404);
predictions created on the web keep them. A file URL can also stop answering sooner (the
ExpiredDownloadUrlError note in shared/seeds/), which is why a failed download re-reads the
prediction first (:func:`refreshed_source`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal, get_args

from cachelayer.errors import ConfigError
from cachelayer.outputs import file_url, lookup
from cachelayer.prediction import Prediction
from cachelayer.retry_policy import SOURCE_REFRESH

if TYPE_CHECKING:
    from cachelayer.catalog.records import PredictionRecord

__all__ = [
    "MAX_REFRESHES",
    "ON_EXPIRED",
    "REMOVED",
    "REPLICATE_RETENTION_SECONDS",
    "Gone",
    "OnExpired",
    "check_on_expired",
    "refreshed_source",
    "retrievable",
    "source_age",
    "warn_if_late",
]

log = logging.getLogger("cachelayer")

#: Replicate removes input, output and files of API predictions one hour after they finish.
REPLICATE_RETENTION_SECONDS = 3600.0
#: Times a source URL that stopped answering is refreshed through ``predictions.get``.
MAX_REFRESHES: int = SOURCE_REFRESH.retries or 0
#: The reason recorded on files of a prediction whose data Replicate removed.
REMOVED = "prediction data removed by Replicate (data_removed)"

#: What a call does with a file whose source is gone: ``raise`` reports it as an error
#: (:class:`~cachelayer.errors.ExpiredDownloadUrlError`), ``skip`` leaves it ``expired``
#: (its source URL stays in the output) and goes on, ``rerun`` reruns the prediction at
#: most once from its recorded input (:meth:`cachelayer.persist.Persister.rerun`). A batch
#: (backfill) never raises for one file: it takes ``skip`` or ``rerun``.
OnExpired = Literal["raise", "skip", "rerun"]
#: The values of :data:`OnExpired`, in order (the CLI's choices).
ON_EXPIRED: tuple[OnExpired, ...] = get_args(OnExpired)


def check_on_expired(value: str, allowed: tuple[OnExpired, ...] = ON_EXPIRED) -> OnExpired:
    """``value`` if it is one of ``allowed``; else raises :class:`ConfigError`."""
    if value not in allowed:
        raise ConfigError(f"on_expired must be {' or '.join(allowed)}, got {value!r}")
    return value


class Gone(Exception):
    """A file's source is gone for good; the message is the reason recorded on the file."""


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


def refreshed_source(
    refresh: Callable[[str], Prediction] | None,
    prediction_id: str,
    path: str,
    failure: Exception,
    refreshes: int,
) -> tuple[str, Prediction]:
    """After the download of the file at output ``path`` answered 403/404/410 or its
    signature expired (``failure``, the ``refreshes``-th time a refreshed URL did): the
    URL to try next and the prediction re-read with ``refresh`` (``predictions.get``). Raises
    :class:`Gone` when the file expired: no ``refresh``, :data:`MAX_REFRESHES` refreshes
    done, the data removed, or no file at ``path`` any more; and what ``refresh`` raises."""
    if refreshes >= MAX_REFRESHES:
        raise Gone(f"still failing after refresh: {failure}")
    if refresh is None:
        raise Gone(f"source stopped answering: {failure}")
    log.info(
        "source URL of %s %s stopped answering (%s); re-reading the prediction",
        prediction_id,
        path or "(root)",
        failure,
    )
    prediction = refresh(prediction_id)
    if prediction.data_removed or prediction.output is None:
        raise Gone("prediction data removed by Replicate")
    try:
        url = file_url(lookup(prediction.output, path))
    except KeyError:
        url = None
    if url is None:
        raise Gone(f"no file at output path {path!r} any more")
    return url, prediction


def retrievable(prediction: PredictionRecord | None, now: datetime | None = None) -> bool:
    """Whether Replicate may still serve a recorded prediction's files: it is recorded,
    has an output, its data was not removed, and it was created on the web (kept) or
    finished (else was created) less than :data:`REPLICATE_RETENTION_SECONDS` before
    ``now``."""
    if prediction is None or prediction.data_removed or prediction.output is None:
        return False
    if prediction.source == "web":
        return True
    finished_at = prediction.completed_at or prediction.created_at
    if finished_at is None:
        return False
    now = now or datetime.now(timezone.utc)
    return (now - finished_at).total_seconds() < REPLICATE_RETENTION_SECONDS
