"""Units of work any runner calls: copy one recorded file; what a persist call was handed.

``CacheLayer.persist(prediction_id)`` (persist one prediction, :mod:`cachelayer.persist`),
``CacheLayer.copy_file(file_id)`` (this module) and ``CacheLayer.sweep()``
(:mod:`cachelayer.sweep`) are the three public units of work. Each is idempotent and safe
to run twice or at once in several processes: every file is claimed in the catalog before
a byte moves (:mod:`cachelayer.leases`), a second caller waits on the first one's lease (or
takes it over once that process is gone) and a file already stored is not downloaded again.
The runners are cachelayer's own (``serve``, ``cachelayer worker``) and the app's job queue
(:mod:`cachelayer.integrations.celery`, :mod:`cachelayer.integrations.rq`); which failures
are worth a retry is :func:`cachelayer.errors.is_transient`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.errors import ExpiredDownloadUrlError, FileNotRecordedError
from cachelayer.outputs import file_url, lookup

if TYPE_CHECKING:  # the copier brings the download stack: the queries load none of it
    from cachelayer.catalog import Catalog
    from cachelayer.copier import Copier

__all__ = ["copy_file", "source_url"]


def source_url(catalog: Catalog, row: FileRecord) -> str:
    """The URL to download ``row`` from: its recorded source URL; a ``data:`` URI is
    recorded as a digest, so its payload comes from the recorded output at the row's
    output path (when kept there)."""
    url = row.source_url
    if url.startswith("data:"):
        rec = catalog.predictions.get(row.prediction_id)
        if rec is not None:
            with contextlib.suppress(KeyError):
                url = file_url(lookup(rec.output, row.output_path)) or url
    return url


def copy_file(catalog: Catalog, copier: Copier, file_id: int) -> FileRecord:
    """Copy the recorded file ``file_id`` (an ``output_files.id``, ``FileRecord.id``):
    claim, fetch, store, record through ``copier`` (a :class:`cachelayer.copier.Copier`);
    the transaction storing a prediction's last file also records its durable output.

    Idempotent: a file already stored comes back as it is (nothing downloaded); while
    another process holds the file's lease this call waits for it to store the file (or
    takes the file over when that process's lease lapses or it is found dead on this host).
    Returns the ``stored`` record. Raises :class:`~cachelayer.errors.FileNotRecordedError`
    (no such file), :class:`~cachelayer.errors.ExpiredDownloadUrlError` (the file is
    recorded ``expired``, or its source answered 404/403/410 and re-reading the prediction
    gave no working URL) and the file's other error when it was not stored (the copier has
    recorded it on the row: ``pending`` again with a backoff for a transient one, see
    :func:`~cachelayer.errors.is_transient`; ``failed`` for a final one)."""
    row = catalog.files.get(file_id)
    if row is None:
        raise FileNotRecordedError(file_id)
    if row.status == FileStatus.STORED:
        return row
    if row.status == FileStatus.EXPIRED:
        raise ExpiredDownloadUrlError(
            row.prediction_id, row.output_path, row.source_url, row.last_error or ""
        )
    finished = catalog.predictions.finished_at(row.prediction_id)
    outcome = copier.copy(row, source_url(catalog, row), finished, record_output=True)
    if outcome.record.status != FileStatus.PENDING:  # the prediction describes itself
        copier.manifests.publish(row.prediction_id)
    if outcome.error is not None:
        raise outcome.error
    return outcome.record
