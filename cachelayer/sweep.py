"""The sweep: the catch-up that makes webhooks safe to miss.

Replicate retries only the final (``completed``) webhook, and its last retry comes about a
minute after the prediction completes; for API predictions, input, output and files are
removed an hour after that (shared/reference/replicate-api.md, "Webhooks" and
"Retention"). A receiver down for longer than a minute never hears of those predictions. One
pass of the sweep closes that gap:

1. **Listing.** Predictions created since the sweep's checkpoint, less :data:`OVERLAP_SECONDS`
   (never a gap: a prediction that became visible in the listing after the last pass read
   past its creation time is still seen), or with no checkpoint yet the last
   :data:`~cachelayer.expiry.REPLICATE_RETENTION_SECONDS` (the data's lifetime: anything
   older is gone anyway), are listed newest first through the history scan of
   :mod:`cachelayer.scan` (``GET /v1/predictions?created_after=``, cursor pagination).
   Each finished one the catalog does not hold finished with a row for every file is
   recorded and its files queued, as a backfill does
   (:func:`~cachelayer.scan.queue_prediction`: a prediction whose data is gone gets its
   files marked ``expired`` with that reason). One still running is recorded as such
   (never turning a finished row back), so step 2 follows it.
2. **Re-reads.** Predictions the catalog holds as ``starting``/``processing`` (from
   ``CacheLayer.create`` or a ``start`` webhook), up to :data:`REREAD_LIMIT` per pass, oldest
   first, and not seen in this pass's listing, are read by id (``GET /v1/predictions/{id}``);
   a finished one is handled as in step 1, a running one is left for the next pass. One
   that answers 404 is recorded as ``data_removed`` with the reason as its ``error`` (and is
   not read again); any other error is counted in the summary and the pass goes on.
0. **Deletes.** Before the listing: deletes a process left half-done are finished, and with
   a retention (``CACHELAYER_RETENTION``) predictions created longer ago are deleted
   (:class:`~cachelayer.delete.Deleter`: ``prune``); counted in ``predictions_deleted`` and
   ``bytes_deleted``. A deleted prediction is never recorded again: the listing skips it.
3. **Checkpoint.** Only after both steps ran to the end is the checkpoint saved: the newest
   ``created_at`` the listing saw (Replicate's clock, so no skew with this host's), never
   moved backwards. A pass that raised (Replicate or the catalog unreachable) or was stopped
   leaves it where it was, so the next pass lists the same window again.

Copying: with ``concurrency`` > 0 worker threads copy what the pass queues, beside it
(:func:`~cachelayer.scan.beside_pool`, as ``cachelayer backfill`` does; also what was already
pending), and the pass returns once the queue is drained: ``cachelayer sweep`` from cron.
With ``0`` it only records and queues, and the workers of ``cachelayer serve`` (or
``cachelayer worker`` processes) copy: ``serve``'s own sweep thread. Running two sweeps at
once (serve and a cron job) is safe: every step is idempotent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from cachelayer.catalog.checkpoints import checkpoint_name
from cachelayer.catalog.records import PredictionRecord
from cachelayer.catalog.server_state import ServerState
from cachelayer.copier import Copier
from cachelayer.delete import Deleter
from cachelayer.errors import CacheLayerError, PredictionNotFoundError
from cachelayer.expiry import REPLICATE_RETENTION_SECONDS
from cachelayer.outputs import find_files
from cachelayer.persist import Persister
from cachelayer.prediction import Prediction, parse_time
from cachelayer.replicate_api import ReplicateApi
from cachelayer.scan import QueuedFn, Scan, ScanFilter, beside_pool, queue_prediction
from cachelayer.workers import BackfillSummary, Tally, finish

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog

__all__ = ["OVERLAP_SECONDS", "REREAD_LIMIT", "SWEEP_CHECKPOINT", "Sweep", "SweepSummary"]

log = logging.getLogger("cachelayer")

#: The checkpoint of the sweep (one per catalog, whoever runs it: serve or cron).
SWEEP_CHECKPOINT = checkpoint_name("sweep", {})
#: Seconds before its checkpoint a pass starts listing: predictions that became visible in
#: the listing late (a create racing the last pass's read) are still seen. Listing them
#: again costs one catalog read per page; they are settled and left alone.
OVERLAP_SECONDS = 600.0
#: Unfinished predictions re-read by id per pass, oldest first (a bound on API calls; the
#: rest wait for the next pass).
REREAD_LIMIT = 1000


class _Stopped(Exception):
    """The pass was asked to stop (``serve`` shutting down)."""


@dataclass
class SweepSummary:
    """What one pass did. Times in seconds, instants as ISO 8601 UTC strings.

    ``predictions_listed``: listed since ``since``; ``predictions_reread``: unfinished ones
    read by id; ``predictions_lost``: their data is gone (``data_removed``) or Replicate
    answers 404 for them, recorded with that reason; ``predictions_failed``: the catalog
    refused to record them (see ``errors``). ``files_queued``: files found not stored and
    queued (or copied at once: ``data:`` URIs), i.e. recovered by this pass;
    ``files_stored`` / ``files_expired`` / ``files_failed`` / ``files_retrying``: outcomes
    of this run's own copies (none when it only queues). ``checkpoint``: the checkpoint
    after the pass (``None``: none yet); ``complete``: the pass ran to the end and the
    checkpoint was saved; ``stopped``: it was asked to stop first. ``failures``: predictions
    not recorded and files failed, counted by reason (the error class); ``errors``: one line
    per prediction the re-reads could not handle. ``predictions_deleted`` /
    ``bytes_deleted``: deletes finished by this pass (half-done ones and, with a retention,
    old ones), ``deletes_unfinished``: deletes left for the next pass (a store failed).
    """

    since: str | None = None
    checkpoint: str | None = None
    predictions_listed: int = 0
    predictions_reread: int = 0
    predictions_lost: int = 0
    predictions_failed: int = 0
    files_queued: int = 0
    files_stored: int = 0
    files_expired: int = 0
    files_failed: int = 0
    files_retrying: int = 0
    bytes_stored: int = 0
    predictions_deleted: int = 0
    bytes_deleted: int = 0
    deletes_unfinished: int = 0
    elapsed_seconds: float = 0.0
    complete: bool = False
    stopped: bool = False
    failures: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the pass completed and nothing failed; 1 otherwise (``cachelayer sweep``)."""
        failed = self.errors or self.predictions_failed or self.files_failed or self.files_retrying
        return 0 if self.complete and not failed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (stable names) and ``exit_code``."""
        d = asdict(self)
        d["elapsed_seconds"] = round(self.elapsed_seconds, 3)
        d["exit_code"] = self.exit_code
        return d


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class _Pages:
    """The listing as the scan reads it, with the catalog rows of each page read in one
    statement (the settled check needs them) and a stop check between pages."""

    def __init__(self, api: ReplicateApi, catalog: Catalog, stop: threading.Event) -> None:
        self.api, self.catalog, self.stop = api, catalog, stop
        self.recorded: dict[str, PredictionRecord] = {}

    def list_page(self, cursor: str | None = None) -> tuple[list[Prediction], str | None]:
        if self.stop.is_set():
            raise _Stopped
        page, nxt = self.api.list_page(cursor)
        self.recorded = self.catalog.predictions.get_many(p.id for p in page)
        return page, nxt


class Sweep:
    """One pass (see the module docstring): ``Sweep(api, catalog, persister).run(copier,
    concurrency)``. ``stop``: set it to end the pass early (between pages and re-reads);
    ``now``: the current time (aware UTC; default the clock), for the first window;
    ``deleter``: finishes half-done deletes and, with its ``retention``, prunes predictions
    created longer ago (step 0; ``None``: no deletes)."""

    def __init__(
        self,
        api: ReplicateApi,
        catalog: Catalog,
        persister: Persister,
        *,
        stop: threading.Event | None = None,
        now: datetime | None = None,
        deleter: Deleter | None = None,
    ) -> None:
        self.api, self.catalog, self.persister = api, catalog, persister
        self.deleter = deleter
        self.stop = stop or threading.Event()
        self.now = now or datetime.now(timezone.utc)
        self.tally = Tally(BackfillSummary(), None)
        self.summary = SweepSummary()
        self.state = ServerState(catalog.engine)
        self.pages = _Pages(api, catalog, self.stop)
        self.newest: datetime | None = None
        self.listed: set[str] = set()

    def run(self, copier: Copier | None, concurrency: int) -> SweepSummary:
        """Run the pass; with ``copier`` and ``concurrency`` > 0 copy what it queues.
        Returns the summary. Raises what listing raises (Replicate errors after the
        client's retries, :class:`~cachelayer.errors.ReplicateConfigError`) and catalog
        outages; then the checkpoint is not moved."""
        self._deletes()
        saved = self.catalog.checkpoints.load(SWEEP_CHECKPOINT)
        high = parse_time(saved.state.get("newest")) if saved is not None else None
        since = (
            high - timedelta(seconds=OVERLAP_SECONDS)
            if high is not None
            else self.now - timedelta(seconds=REPLICATE_RETENTION_SECONDS)
        )
        self.summary.since = _iso(since)
        self.summary.checkpoint = _iso(high)

        def body(on_queued: QueuedFn) -> None:
            flt = ScanFilter(since=since)
            Scan(
                self.pages,
                self.catalog,
                self.persister,
                flt,
                self.tally,
                limit=None,
                dry_run=False,
                on_queued=on_queued,
                checkpoint=False,
                take=self._take_listed,
            ).run()
            self._reread(on_queued)

        try:
            if copier is not None and concurrency > 0:
                beside_pool(self.catalog, copier, self.tally, concurrency, body)
                finish(self.catalog, self.tally)
            else:
                body(lambda p, n: None)
        except _Stopped:
            self.summary.stopped = True
        else:
            self._save_checkpoint()
        return self._summary()

    # ---- step 0: deletes -------------------------------------------------------------------

    def _deletes(self) -> None:
        if self.deleter is None:
            return
        runs = [self.deleter.finish_unfinished()]
        if self.deleter.retention is not None:
            runs.append(self.deleter.prune(self.deleter.retention, stop=self.stop, now=self.now))
        for run in runs:
            self.summary.predictions_deleted += run.predictions
            self.summary.bytes_deleted += run.bytes_freed
        self.summary.deletes_unfinished = len(self.catalog.tombstones.unfinished(1000))
        if self.summary.predictions_deleted:
            log.info(
                "sweep: %d prediction(s) deleted, %d bytes freed",
                self.summary.predictions_deleted,
                self.summary.bytes_deleted,
            )

    # ---- step 1: the listing --------------------------------------------------------------

    def _take_listed(self, p: Prediction) -> int:
        self.listed.add(p.id)
        if p.created_at is not None and (self.newest is None or p.created_at > self.newest):
            self.newest = p.created_at
        if not p.terminal:
            self.state.record_progress(p)  # step 2 re-reads it until it finishes
            return 0
        if self._settled(p, self.pages.recorded.get(p.id)):
            return 0
        return self._queue(p)

    def _settled(self, p: Prediction, rec: PredictionRecord | None) -> bool:
        """The catalog holds ``p`` finished (and knows when its data is gone), with a row for
        each of its files (whatever their status: pending ones are in the queue, failed and
        expired ones are final)."""
        if rec is None or rec.status != p.status.value or (p.data_removed and not rec.data_removed):
            return False
        paths = {f.path for f in find_files(p.output)}
        if not paths:
            return True
        return paths <= {r.output_path for r in self.catalog.files.of_prediction(p.id)}

    def _queue(self, p: Prediction) -> int:
        queued = queue_prediction(self.persister, self.tally, p)
        if queued:
            log.info("sweep: %s %s, %d file(s) queued", p.id, p.status.value, queued)
        return queued

    # ---- step 2: re-reads -----------------------------------------------------------------

    def _reread(self, on_queued: QueuedFn) -> None:
        for pid in self.catalog.predictions.unfinished(REREAD_LIMIT):
            if pid in self.listed:
                continue  # read a moment ago, recorded as it was
            if self.stop.is_set():
                raise _Stopped
            self.summary.predictions_reread += 1
            try:
                p = self.api.get(pid)
            except PredictionNotFoundError as exc:
                reason = f"not found at Replicate when the sweep re-read it: {exc}"
                if self.catalog.predictions.mark_lost(pid, reason):
                    self.summary.predictions_lost += 1
                log.warning("sweep: %s", reason)
                continue
            except CacheLayerError as exc:
                self.summary.errors.append(f"{pid}: {exc}")
                log.warning("sweep: could not re-read %s: %s", pid, exc)
                continue
            if not p.terminal:
                self.state.record_progress(p)
                continue
            try:
                queued = self._queue(p)
            except CacheLayerError as exc:  # this one cannot be recorded; the rest go on
                self.summary.errors.append(f"{pid}: {exc}")
                log.warning("sweep: could not record %s: %s", pid, exc)
                continue
            if queued:
                on_queued(p, queued)

    # ---- step 3: the checkpoint -------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        saved = self.catalog.checkpoints.load(SWEEP_CHECKPOINT)  # another sweep may have moved it
        high = parse_time(saved.state.get("newest")) if saved is not None else None
        if self.newest is not None and (high is None or self.newest > high):
            high = self.newest
        state = {"newest": _iso(high), "last_pass": _iso(self.now)}
        self.catalog.checkpoints.save(SWEEP_CHECKPOINT, None, state)
        self.summary.checkpoint = _iso(high)
        self.summary.complete = True

    def _summary(self) -> SweepSummary:
        self.tally.tick(force=True)
        t, s = self.tally.summary, self.summary
        s.predictions_listed = t.predictions_scanned
        s.predictions_lost += t.predictions_removed
        s.predictions_failed = t.predictions_failed
        s.files_queued = t.files_queued
        s.files_stored, s.bytes_stored = t.files_stored, t.bytes_stored
        s.files_expired, s.files_failed, s.files_retrying = t.files_expired, t.files_failed, t.files_retrying
        s.elapsed_seconds = t.elapsed_seconds
        s.failures = dict(t.failures)
        return s
