"""Deleting predictions' copies and the retention that prunes old ones (issue 18 items 2, 3).

One delete, :meth:`Deleter.delete_batch`, runs the same steps for ``cachelayer delete``,
``cachelayer prune``, serve's sweep (``CACHELAYER_RETENTION``) and the finishing of a
delete a process left half-done. Every step is idempotent and ordered so that a process
killed at any point (kill -9) leaves a state the next run finishes
(:mod:`cachelayer.catalog.tombstones` has the catalog's half):

1. ``catalog.tombstones.begin``: a tombstone (``deleted_at NULL``), the files
   ``deleting`` (their rows still say where each object is), input and output erased. From
   here on no persist, backfill, sweep, webhook or rerun records or copies the prediction
   (:class:`~cachelayer.errors.PredictionDeletedError`), and no claim takes its files.
2. each file's object is removed from the store the file records (``Store.delete``: S3
   ``DeleteObjects``, 1,000 keys a call; local files), keys grouped per store.
3. the manifest of the prediction is replaced by its tombstone (:meth:`Deleter._tombstone_manifests`).
4. ``catalog.tombstones.finish``: files ``deleted``, the tombstone's ``deleted_at``, files
   and bytes freed (recorded sizes of the files that had been stored).

A store that fails leaves its predictions at step 1 (``unfinished``): a rerun of the
delete, or the next sweep (:meth:`Deleter.finish_unfinished`), starts again from step 2.
So does a copy in flight when the delete began (its lease): the copier removes what it
wrote once it sees the file deleting, or, had it died, the next run does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from cachelayer.catalog.records import FileRecord
from cachelayer.catalog.tombstones import TombstoneRecord
from cachelayer.errors import CacheLayerError, ConfigError, failure_reason
from cachelayer.storage.base import Store

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog

__all__ = ["BATCH", "DeleteOutcome", "DeleteSummary", "Deleter", "Outcome"]

log = logging.getLogger("cachelayer")

#: Predictions per delete batch of ``prune`` and the sweep (one catalog transaction per
#: step; at most 1,000 keys per S3 ``DeleteObjects`` call inside the store).
BATCH = 200

#: What happened to one id: ``deleted`` (now), ``already_deleted`` (an earlier delete had
#: finished), ``unknown`` (no such prediction in the catalog), ``unfinished`` (begun; a
#: store failed or a copy was in flight: run it again, or the sweep finishes it),
#: ``would_delete`` (``dry_run``).
Outcome = str

#: ``progress(summary)``: called after each batch of a prune.
ProgressFn = Callable[["DeleteSummary"], None]


class PruneOptions(TypedDict, total=False):
    """The keyword options of :meth:`Deleter.prune` (and ``CacheLayer.prune``)."""

    models: Sequence[str]
    statuses: Sequence[str]
    dry_run: bool
    reason: str | None
    progress: ProgressFn | None
    stop: threading.Event | None
    now: datetime | None


@dataclass
class DeleteOutcome:
    """One prediction id's outcome (see :data:`Outcome`); ``files`` and ``bytes_freed``
    (bytes, recorded sizes of the files that were stored) for ``deleted``,
    ``already_deleted`` and ``would_delete``; ``error`` why it is ``unfinished``."""

    prediction_id: str
    outcome: Outcome
    files: int = 0
    bytes_freed: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class DeleteSummary:
    """The outcome of a delete or prune: each id's :class:`DeleteOutcome` (input order),
    and totals over those deleted now (or that would be, with ``dry_run``)."""

    outcomes: list[DeleteOutcome] = field(default_factory=list)
    dry_run: bool = False
    elapsed_seconds: float = 0.0

    def _done(self) -> list[DeleteOutcome]:
        return [o for o in self.outcomes if o.outcome in ("deleted", "would_delete")]

    @property
    def predictions(self) -> int:
        """Predictions deleted (``dry_run``: that would be)."""
        return len(self._done())

    @property
    def files(self) -> int:
        """Files deleted (``dry_run``: that would be)."""
        return sum(o.files for o in self._done())

    @property
    def bytes_freed(self) -> int:
        """Bytes freed (``dry_run``: that would be), recorded sizes."""
        return sum(o.bytes_freed for o in self._done())

    def ids(self, outcome: Outcome) -> list[str]:
        """The ids with ``outcome``."""
        return [o.prediction_id for o in self.outcomes if o.outcome == outcome]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: totals, ``unknown``/``unfinished`` ids and every outcome."""
        return {
            "dry_run": self.dry_run,
            "predictions": self.predictions,
            "files": self.files,
            "bytes_freed": self.bytes_freed,
            "already_deleted": len(self.ids("already_deleted")),
            "unknown": self.ids("unknown"),
            "unfinished": self.ids("unfinished"),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


class Deleter:
    """Deletes predictions' objects and records their tombstones (module docstring).

    ``catalog``; ``store_for(uri)``: the store a file recorded with ``store = uri`` lives in
    (:meth:`cachelayer.CacheLayer.store_for`); ``retention`` (seconds, ``CACHELAYER_RETENTION``;
    ``None``: off): the age the sweep prunes at; ``manifest_store``: the uri of the store
    the manifests of predictions without files went to. Thread-safe as far as its parts are."""

    def __init__(
        self,
        catalog: Catalog,
        store_for: Callable[[str], Store],
        *,
        retention: float | None = None,
        manifest_store: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.store_for = store_for
        #: Where the manifest of a prediction without files was written (the configured store).
        self.manifest_store = manifest_store
        #: The age at which serve's sweep prunes (``None``: never).
        self.retention = timedelta(seconds=retention) if retention else None

    # ---- one delete ---------------------------------------------------------------------

    def delete(
        self, prediction_ids: Iterable[str], *, reason: str | None = None, dry_run: bool = False
    ) -> DeleteSummary:
        """Delete each prediction's objects from the stores its files record and keep a
        tombstone (``reason`` recorded on it); ``dry_run``: report what would be deleted
        and change nothing. Ids are taken in order, duplicates once, :data:`BATCH` at a
        time. Unknown ids are reported (``unknown``), never an error; a store failure
        leaves its ids ``unfinished``. Raises :class:`~cachelayer.errors.ConfigError` for
        an empty id and catalog outages (what was done stays done; a rerun finishes)."""
        started = time.monotonic()
        ids = list(dict.fromkeys(i.strip() for i in prediction_ids))
        if any(not i for i in ids):
            raise ConfigError("a prediction id must not be empty")
        summary = DeleteSummary(dry_run=dry_run)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            summary.outcomes += self.preview(chunk) if dry_run else self.delete_batch(chunk, reason)
        summary.elapsed_seconds = time.monotonic() - started
        return summary

    def delete_batch(self, prediction_ids: Sequence[str], reason: str | None) -> list[DeleteOutcome]:
        """Every step of a delete, for a batch of ids (the module docstring's 1 to 4), in
        input order. The one place the steps are run; see :meth:`delete` for the rules."""
        tombs = self.catalog.tombstones.get_many(prediction_ids)
        # 1. tombstones, files ``deleting``, input and output erased (one transaction)
        files = self.catalog.tombstones.begin(prediction_ids, reason)
        # 2. the objects, from each file's own store
        failed = self._remove_objects(files)
        # 3. the bucket's description of each prediction follows
        failed.update(self._tombstone_manifests([p for p in files if p not in failed], files))
        ok = [p for p in files if p not in failed]
        # 4. files ``deleted``, the tombstone finished (one transaction)
        finished = self.catalog.tombstones.finish(ok)
        return [self._outcome(p, tombs.get(p), files, failed, finished) for p in prediction_ids]

    def _remove_objects(self, files: dict[str, list[FileRecord]]) -> dict[str, str]:
        """Remove the objects of ``files`` (``{prediction id: files deleting}``) and of their
        mirror copies (``catalog.copies``), keys grouped per recorded store. Returns
        ``{prediction id: error}`` for the predictions with a file in a store that failed
        (their deletes stay unfinished)."""
        by_store: dict[str, list[tuple[str, str]]] = {}  # store -> [(prediction id, key)]
        owner = {f.id: f.prediction_id for rows in files.values() for f in rows}
        for rows in files.values():
            for f in rows:
                by_store.setdefault(f.store, []).append((f.prediction_id, f.key))
        for file_id, copies in self.catalog.copies.of_files(owner).items():  # the mirrors'
            for c in copies:
                by_store.setdefault(c.store, []).append((owner[file_id], c.key))
        failed: dict[str, str] = {}
        for uri, pairs in by_store.items():
            try:
                self.store_for(uri).delete([key for _, key in pairs])
            except (CacheLayerError, ValueError) as exc:
                reason = f"{uri}: {failure_reason(exc)}"
                log.warning("delete: objects in %s not removed: %s", uri, reason)
                for pid, _ in pairs:
                    failed.setdefault(pid, reason)
        return failed

    def _tombstone_manifests(
        self, prediction_ids: Sequence[str], files: dict[str, list[FileRecord]]
    ) -> dict[str, str]:
        """Replace each prediction's manifest (``{prefix}/_manifests/{id}.json``, in every
        store its files were written to, under the prefix of their keys; else in
        :attr:`manifest_store`) by its tombstone, after its objects are gone and before the
        catalog says so (a crash in between: the rerun writes it again). Returns
        ``{prediction id: error}`` for those whose tombstone could not be written (their
        deletes stay unfinished)."""
        from cachelayer.keys import prediction_part
        from cachelayer.manifests import write_tombstone

        tombs = self.catalog.tombstones.get_many(prediction_ids)
        failed: dict[str, str] = {}
        for pid in prediction_ids:
            where: dict[tuple[str, str | None], None] = {}
            part = f"/{prediction_part(pid)}/"
            for f in files.get(pid, []):
                cut = ("/" + f.key).find(part)  # keys are {prefix}/{prediction}/{output}
                where[(f.store, ("/" + f.key)[1:cut] if cut >= 0 else None)] = None
            if not where and self.manifest_store:
                where[(self.manifest_store, None)] = None
            tomb = tombs.get(pid)
            doc = tomb.to_dict() if tomb is not None else {"prediction_id": pid}
            for uri, prefix in where:
                try:
                    write_tombstone(self.store_for(uri), pid, doc, prefix=prefix)
                except (CacheLayerError, ValueError) as exc:
                    failed[pid] = f"{uri}: manifest tombstone not written: {failure_reason(exc)}"
                    log.warning("delete: %s", failed[pid])
        return failed

    def _outcome(
        self,
        pid: str,
        before: TombstoneRecord | None,
        files: dict[str, list[FileRecord]],
        failed: dict[str, str],
        finished: dict[str, TombstoneRecord],
    ) -> DeleteOutcome:
        done = finished.get(pid)
        if done is not None:
            return DeleteOutcome(pid, "deleted", done.files, done.bytes_freed)
        if before is not None and before.deleted_at is not None:
            return DeleteOutcome(pid, "already_deleted", before.files, before.bytes_freed)
        if pid not in files:
            return DeleteOutcome(pid, "unknown")
        error = failed.get(pid) or "a copy of one of its files was in flight (its lease); run delete again"
        return DeleteOutcome(pid, "unfinished", error=error)

    def preview(self, prediction_ids: Sequence[str]) -> list[DeleteOutcome]:
        """What :meth:`delete_batch` would do to each id, changing nothing."""
        tombs = self.catalog.tombstones.get_many(prediction_ids)
        found = self.catalog.tombstones.candidates(prediction_ids)
        out = []
        for pid in prediction_ids:
            tomb, cand = tombs.get(pid), found.get(pid)
            if tomb is not None and tomb.deleted_at is not None:
                out.append(DeleteOutcome(pid, "already_deleted", tomb.files, tomb.bytes_freed))
            elif cand is None:
                out.append(DeleteOutcome(pid, "unknown"))
            else:
                out.append(DeleteOutcome(pid, "would_delete", len(cand.files), cand.stored_bytes))
        return out

    def finish_unfinished(self, *, limit: int = 10 * BATCH) -> DeleteSummary:
        """Run again the deletes a process left half-done (tombstones without
        ``deleted_at``), up to ``limit`` of them, oldest first (serve's sweep). Their reason
        stays the first one."""
        started = time.monotonic()
        summary = DeleteSummary()
        ids = self.catalog.tombstones.unfinished(limit)
        for start in range(0, len(ids), BATCH):
            summary.outcomes += self.delete_batch(ids[start : start + BATCH], None)
        summary.elapsed_seconds = time.monotonic() - started
        return summary

    # ---- retention ----------------------------------------------------------------------

    def prune(
        self,
        older_than: timedelta,
        *,
        models: Sequence[str] = (),
        statuses: Sequence[str] = (),
        dry_run: bool = False,
        reason: str | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
        now: datetime | None = None,
    ) -> DeleteSummary:
        """Delete every recorded prediction created more than ``older_than`` ago (else
        recorded, when Replicate gave no creation time), of ``models`` (``owner/name``) and
        prediction ``statuses`` (``succeeded``, ``failed``...) when given, :data:`BATCH` at a
        time, with :meth:`delete_batch`; ``progress(summary)`` after each batch; ``stop``
        ends it after the current batch. ``reason`` defaults to ``retention: older than
        N days``. Returns the summary (``dry_run``: what would be deleted, nothing
        changed). Raises :class:`~cachelayer.errors.ConfigError` for a non-positive age and
        catalog outages."""
        if older_than <= timedelta(0):
            raise ConfigError(f"the age to prune must be positive, got {older_than}")
        started = time.monotonic()
        cutoff = (now or datetime.now(timezone.utc)) - older_than
        why = reason or f"retention: older than {_age_text(older_than)}"
        summary = DeleteSummary(dry_run=dry_run)
        after: str | None = None
        while stop is None or not stop.is_set():
            ids = self.catalog.tombstones.older_than(
                cutoff, models=models, statuses=statuses, after=after, limit=BATCH
            )
            if not ids:
                break
            after = ids[-1]
            summary.outcomes += self.preview(ids) if dry_run else self.delete_batch(ids, why)
            summary.elapsed_seconds = time.monotonic() - started
            if progress is not None:
                progress(summary)
        summary.elapsed_seconds = time.monotonic() - started
        return summary


def _age_text(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{age.total_seconds():g} seconds"
