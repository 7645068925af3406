"""The catalog: SQL tables that map predictions and source URLs to objects, and the queue.

All SQL of cachelayer lives in this package, as named queries grouped in small
repositories over one :class:`~cachelayer.catalog.session.Database` (engine, sessions,
retries of transient errors):

=================  ==========================================================================
``predictions``    :class:`~cachelayer.catalog.predictions.PredictionRepository`: record a
                   typed prediction, read it, follow reruns
``files``          :class:`~cachelayer.catalog.files.FileRepository`: a prediction's file
                   rows, source URL aliases, resolve a source URL
``queue``          :class:`~cachelayer.catalog.queue.QueueRepository`: claims, leases,
                   outcomes (stored, failed, expired, re-queued), counts
``reports``        :class:`~cachelayer.catalog.reports.ReportRepository`: listings with
                   keyset cursors, show, statistics
``checkpoints``    :class:`~cachelayer.catalog.checkpoints.CheckpointRepository`: progress
                   of long-running jobs, keyed by the filter's spec
``reruns``         :class:`~cachelayer.catalog.reruns.RerunRepository`: the at-most-once
                   rerun claims
``copies``         :class:`~cachelayer.catalog.copies.CopyRepository`: each file's copies in
                   the mirror stores, the mirror queue, every copy of given predictions
``tombstones``     :class:`~cachelayer.catalog.tombstones.TombstoneRepository`: deleted
                   predictions and the catalog's steps of a delete
=================  ==========================================================================

:class:`Catalog` (:mod:`cachelayer.catalog.composed`) composes them
(``catalog.queue.claim_next(...)``) and offers the documented query methods directly.
Values Replicate can send that a database would refuse are stored under lossless rules
(:mod:`cachelayer.catalog.encoding`, docs/SCHEMA.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachelayer.lazy import lazy_getattr

if TYPE_CHECKING:
    from cachelayer.catalog.checkpoints import CheckpointRecord, checkpoint_name
    from cachelayer.catalog.composed import Catalog
    from cachelayer.catalog.encoding import catalog_url
    from cachelayer.catalog.filters import FileFilter
    from cachelayer.catalog.records import FileRecord, FileStatus, NewFile, PredictionRecord
    from cachelayer.catalog.reports import CursorError, Page, PredictionFiles, StatsBy, StatsRow
    from cachelayer.catalog.tombstones import TombstoneRecord

__all__ = [
    "Catalog",
    "CheckpointRecord",
    "CursorError",
    "FileFilter",
    "FileRecord",
    "FileStatus",
    "NewFile",
    "Page",
    "PredictionFiles",
    "PredictionRecord",
    "StatsBy",
    "StatsRow",
    "TombstoneRecord",
    "catalog_url",
    "checkpoint_name",
]

#: Each public name -> the module that defines it, imported when the name is first asked
#: for: importing a submodule (``cachelayer.catalog.records``: the records and
#: ``FileStatus``) loads no SQLAlchemy, so a copy command imports it only when it opens the
#: catalog, after its first request is on the network (docs/BENCHMARKS.md, issue 21 item 5).
_EXPORTS = {
    "Catalog": "cachelayer.catalog.composed",
    "CheckpointRecord": "cachelayer.catalog.checkpoints",
    "CursorError": "cachelayer.catalog.reports",
    "FileFilter": "cachelayer.catalog.filters",
    "FileRecord": "cachelayer.catalog.records",
    "FileStatus": "cachelayer.catalog.records",
    "NewFile": "cachelayer.catalog.records",
    "Page": "cachelayer.catalog.reports",
    "PredictionFiles": "cachelayer.catalog.reports",
    "PredictionRecord": "cachelayer.catalog.records",
    "StatsBy": "cachelayer.catalog.reports",
    "StatsRow": "cachelayer.catalog.reports",
    "TombstoneRecord": "cachelayer.catalog.tombstones",
    "catalog_url": "cachelayer.catalog.encoding",
    "checkpoint_name": "cachelayer.catalog.checkpoints",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
