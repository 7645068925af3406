"""Backfill: rescue a whole prediction history, resumably, on one machine or many.

Two halves that run at the same time:

* the **scan** pages through ``GET /v1/predictions`` (newest first, cursor pagination),
  records every prediction it sees in the catalog and queues each of its files as a
  ``pending`` row; after each page it saves a checkpoint (cursor and counts), so a rerun
  continues where a stopped one left off;
* the **workers** claim pending rows with leases (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)
  and copy them through the same pipeline as ``CacheLayer.persist``. ``cachelayer worker``
  runs only this half, so several machines pointed at one PostgreSQL catalog and one bucket
  split the queue between them.

Killing either at any moment loses nothing: a file is ``stored`` only after its object is
complete, a claim of a dead process lapses (at once for processes of this host, after the
lease for others), and every write is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cachelayer import expiry, replicate_api
from cachelayer.catalog.queries import parse_time
from cachelayer.catalog.records import FileRecord, PredictionRecord, iso
from cachelayer.errors import CacheLayerError, ConfigError, ExpiredDownloadUrlError
from cachelayer.outputs import find_files
from cachelayer.pipeline import FileOutcome

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer

log = logging.getLogger("cachelayer")

ProgressFn = Callable[["BackfillSummary"], None]


@dataclass
class BackfillSummary:
    """Counts of one backfill or worker run. Sizes in bytes, times in seconds.

    ``files_stored`` were copied by this run; ``files_skipped`` were already stored;
    ``files_expired`` can never be copied (Replicate removed the data); ``files_failed``
    failed for good (see ``failures``, counts per reason); ``files_retrying`` failed for
    now and are back in the queue with a backoff.
    """

    predictions_scanned: int = 0
    predictions_removed: int = 0
    predictions_rerun: int = 0
    files_queued: int = 0
    files_stored: int = 0
    files_skipped: int = 0
    files_expired: int = 0
    files_failed: int = 0
    files_retrying: int = 0
    bytes_stored: int = 0
    elapsed_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    files_to_copy: int = 0
    scan_complete: bool = False
    resumed: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every retrievable file is stored, 1 when some failed."""
        return 1 if (self.files_failed or self.files_retrying) else 0

    @property
    def rate_bytes_per_second(self) -> float:
        return self.bytes_stored / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every count (stable field names)."""
        d = asdict(self)
        d["rate_bytes_per_second"] = round(self.rate_bytes_per_second, 1)
        d["exit_code"] = self.exit_code
        d["elapsed_seconds"] = round(self.elapsed_seconds, 3)
        return d


@dataclass(frozen=True)
class ScanFilter:
    """Which predictions a backfill takes: created in ``[since, until]``, of ``models``
    (``owner/name``; empty = all), from ``source`` (``api``/``web``; ``None`` = both),
    with a status in ``statuses`` (empty = all)."""

    since: datetime | None = None
    until: datetime | None = None
    models: tuple[str, ...] = ()
    source: str | None = None
    statuses: tuple[str, ...] = ()

    def checkpoint_name(self) -> str:
        """Checkpoints are per filter, so different backfills do not resume each other."""
        key = json.dumps([iso(self.since), iso(self.until), sorted(self.models), self.source,
                          sorted(self.statuses)])
        return "backfill:" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def wants(self, p: dict[str, Any]) -> bool:
        if self.models and p.get("model") not in self.models:
            return False
        if self.statuses and p.get("status") not in self.statuses:
            return False
        return not (self.source and p.get("source") and p.get("source") != self.source)


class _Tally:
    """Thread-safe summary updates and rate-limited progress callbacks."""

    def __init__(self, summary: BackfillSummary, progress: ProgressFn | None) -> None:
        self.summary = summary
        self.progress = progress
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self._last = 0.0
        self.reasons: Counter[str] = Counter()
        self.expired_predictions: set[str] = set()

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self.summary, k, getattr(self.summary, k) + v)
        self.tick()

    def outcome(self, o: FileOutcome) -> None:
        status = o.record.status
        with self.lock:
            if status == "expired":
                self.expired_predictions.add(o.record.prediction_id)
            s = self.summary
            if o.error is None:
                if o.skipped:
                    s.files_skipped += 1
                else:
                    s.files_stored += 1
                    s.bytes_stored += o.record.size or 0
            elif status == "expired" or isinstance(o.error, ExpiredDownloadUrlError):
                s.files_expired += 1
            elif status == "pending":
                s.files_retrying += 1  # back in the queue with a backoff
            else:
                s.files_failed += 1
                self.reasons[type(o.error).__name__] += 1
        self.tick()

    def retried(self) -> None:
        with self.lock:
            self.summary.files_retrying = max(0, self.summary.files_retrying - 1)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            self.summary.elapsed_seconds = now - self.started
            self.summary.failures = {k: v for k, v in self.reasons.items() if v}
            if self.progress is None or (not force and now - self._last < 0.2):
                return
            self._last = now
        self.progress(self.summary)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_dead_local_leases(layer: CacheLayer) -> int:
    """Release leases held by processes of this host that no longer exist (a ``kill -9``),
    so their files are taken over at once instead of after the lease. Returns how many."""
    host = socket.gethostname()[:30]
    dead = []
    for owner in layer.catalog.lease_owners():
        parts = owner.split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() \
                and int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1])):
            dead.append(owner)
    n = layer.catalog.release_leases(dead)
    if n:
        log.info("took over %d file(s) claimed by dead local processes %s", n, dead)
    return n


def prediction_json(rec: PredictionRecord) -> dict[str, Any]:
    """A recorded prediction in Replicate's JSON shape (what the pipeline works from)."""
    return {
        "id": rec.id, "model": rec.model, "version": rec.version, "status": rec.status,
        "source": rec.source, "input": rec.input, "output": rec.output, "error": rec.error,
        "created_at": iso(rec.created_at), "started_at": iso(rec.started_at),
        "completed_at": iso(rec.completed_at), "data_removed": rec.data_removed,
    }


class Workers:
    """``concurrency`` threads that claim pending files and copy them until the queue has
    nothing left for them (or ``stop`` is set)."""

    def __init__(self, layer: CacheLayer, tally: _Tally, concurrency: int, *,
                 wait_for_scan: threading.Event | None, once: bool,
                 stop: threading.Event | None = None, idle_poll: float = 0.1) -> None:
        self.layer = layer
        self.tally = tally
        self.concurrency = concurrency
        self.scan_done = wait_for_scan
        self.once = once
        self.stop = stop or threading.Event()
        self.idle_poll = idle_poll
        self._predictions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []

    def _prediction(self, pid: str) -> dict[str, Any] | None:
        with self._lock:
            cached = self._predictions.get(pid)
        if cached is not None:
            return cached
        rec = self.layer.catalog.get_prediction(pid)
        if rec is None:
            return None
        data = prediction_json(rec)
        with self._lock:
            if len(self._predictions) > 10_000:
                self._predictions.clear()
            self._predictions[pid] = data
        return data

    def _idle(self) -> bool:
        """Whether this run is done: the scan (if any) finished and no pending file is
        left that is unleased (backoff rows are waited for; others' leases are theirs)."""
        if self.scan_done is not None and not self.scan_done.is_set():
            return False
        if not self.once:
            return False
        return self.layer.catalog.count_unleased_pending() == 0

    def _loop(self) -> None:
        pipeline = self.layer.pipeline
        while not self.stop.is_set():
            row = self.layer.catalog.claim_next(pipeline.owner, pipeline.lease_seconds)
            if row is None:
                if self._idle():
                    return
                self.stop.wait(self.idle_poll)
                continue
            self._copy(row)

    def _copy(self, row: FileRecord) -> None:
        pred = self._prediction(row.prediction_id)
        if pred is None:  # cannot happen with FKs; keep the row for a later run
            self.layer.catalog.mark_unstored(row.id, self.layer.pipeline.owner, status="failed",
                                             error="prediction row missing")
            return
        if row.attempts > 1:
            self.tally.retried()
        self.tally.outcome(self.layer.pipeline.copy_claimed(row, pred))

    def _guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surface crashes of worker threads to the caller
            self.errors.append(exc)
            self.stop.set()

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._guarded, name=f"cachelayer-worker-{i}",
                                    daemon=True) for i in range(self.concurrency)]
        for t in threads:
            t.start()
        return threads


def scan(layer: CacheLayer, flt: ScanFilter, tally: _Tally, *, limit: int | None,
         dry_run: bool) -> None:
    """Page through the prediction history, record and queue (see the module docstring)."""
    catalog = layer.catalog
    name = flt.checkpoint_name()
    cursor, state = (None, {}) if dry_run else catalog.load_checkpoint(name)
    if state.get("complete"):
        cursor, state = None, {}
    if cursor:
        tally.summary.resumed = True
        log.info("resuming backfill scan from checkpoint %s", name)
    seen = int(state.get("predictions_scanned", 0))
    while True:
        page, next_cursor = replicate_api.list_predictions(layer.client, cursor, flt.source)
        stop = False
        for p in page:
            created = parse_time(p.get("created_at"))
            if flt.until and created and created > flt.until:
                continue
            if flt.since and created and created < flt.since:
                stop = True
                break
            if not flt.wants(p):
                continue
            if limit is not None and seen >= limit:
                stop = True
                break
            seen += 1
            tally.add(predictions_scanned=1)
            if dry_run:
                _count_dry(layer, p, tally)
            else:
                _record(layer, p, tally)
        cursor = next_cursor
        if not dry_run:
            catalog.save_checkpoint(name, cursor, {
                "predictions_scanned": seen, "complete": stop or not cursor})
        if stop or not cursor:
            break
    tally.summary.scan_complete = True


def _count_dry(layer: CacheLayer, p: dict[str, Any], tally: _Tally) -> None:
    stored = {r.output_path for r in layer.catalog.files_of(p["id"]) if r.status == "stored"}
    files = find_files(p.get("output"))
    todo = [f for f in files if f.path not in stored]
    tally.add(files_to_copy=len(todo) if not expiry.is_removed(p) else 0,
              files_skipped=len(files) - len(todo),
              predictions_removed=int(expiry.is_removed(p)))


def _record(layer: CacheLayer, p: dict[str, Any], tally: _Tally) -> None:
    if expiry.is_removed(p):
        tally.add(predictions_removed=1)
        result = layer.pipeline.persist(p)  # marks unstored files expired; no download
        for o in result.files:
            tally.outcome(o)
        return
    rows = layer.pipeline.record(p)
    tally.add(files_queued=sum(r.status != "stored" for r in rows),
              files_skipped=sum(r.status == "stored" for r in rows))


def backfill(layer: CacheLayer, flt: ScanFilter, *, concurrency: int, limit: int | None = None,
             dry_run: bool = False, scan_only: bool = False, on_expired: str = "skip",
             progress: ProgressFn | None = None) -> BackfillSummary:
    """Scan and copy concurrently; returns the summary. See :meth:`CacheLayer.backfill`.
    ``scan_only``: record and queue, copy nothing (``cachelayer worker`` processes copy)."""
    if on_expired not in ("skip", "rerun"):
        raise ConfigError(f"on_expired must be skip or rerun, got {on_expired!r}")
    tally = _Tally(BackfillSummary(dry_run=dry_run), progress)
    if dry_run:
        scan(layer, flt, tally, limit=limit, dry_run=True)
        tally.tick(force=True)
        return tally.summary
    release_dead_local_leases(layer)
    scan_done = threading.Event()
    workers = Workers(layer, tally, 0 if scan_only else concurrency, wait_for_scan=scan_done,
                      once=True)
    threads = workers.start()
    try:
        scan(layer, flt, tally, limit=limit, dry_run=False)
    finally:
        scan_done.set()
        _join(threads, workers)
    if on_expired == "rerun":
        _rerun_expired(layer, tally)
    tally.tick(force=True)
    return tally.summary


def _rerun_expired(layer: CacheLayer, tally: _Tally) -> None:
    """After the copies: rerun each prediction of this run that has expired files, a
    recorded version and input, and no rerun yet (``--on-expired rerun``)."""
    for pid in sorted(tally.expired_predictions):
        rec = layer.catalog.get_prediction(pid)
        if rec is None or rec.input is None or not rec.version or layer.catalog.reruns_of(pid):
            continue
        try:
            result = layer.rerun(pid)
        except CacheLayerError as exc:
            log.warning("rerun of %s failed: %s", pid, exc)
            continue
        tally.add(predictions_rerun=1)
        for o in result.files:
            tally.outcome(o)


def work(layer: CacheLayer, *, concurrency: int, once: bool, stop: threading.Event | None = None,
         progress: ProgressFn | None = None) -> BackfillSummary:
    """Drain the queue (``once``) or keep draining until ``stop`` is set."""
    tally = _Tally(BackfillSummary(), progress)
    release_dead_local_leases(layer)
    workers = Workers(layer, tally, concurrency, wait_for_scan=None, once=once, stop=stop,
                      idle_poll=0.1 if once else 1.0)
    _join(workers.start(), workers)
    tally.summary.scan_complete = True
    tally.tick(force=True)
    return tally.summary


def _join(threads: Sequence[threading.Thread], workers: Workers) -> None:
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        workers.stop.set()
        for t in threads:
            t.join(30)
        raise
    if workers.errors:
        raise workers.errors[0]
