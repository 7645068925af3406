"""The worker pool: threads that claim queued files and copy them.

Files are claimed with leases (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several
processes on several machines pointed at one catalog and one bucket split the queue; a file
is ``stored`` only after its object is complete, and a claim of a dead process lapses (at
once for processes of this host, after the lease for others). With ``once``, the pool runs
until nothing is left: it also waits for files other processes hold until they are stored
or their leases lapse (then takes them over), so a survivor of a killed worker finishes its
work. :class:`BackfillSummary` counts what a run did.

A file that cannot be copied fails alone (:meth:`cachelayer.copier.Copier.copy_claimed`
never raises); a pool that runs until stopped (``serve``) also outlives a catalog that
cannot hand out claims, trying again with a backoff up to 30 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cachelayer.catalog.records import FileRecord
from cachelayer.copier import Copier, FileOutcome
from cachelayer.errors import ExpiredDownloadUrlError, failure_reason
from cachelayer.leases import release_dead_local_leases
from cachelayer.prediction import Prediction
from cachelayer.retry_policy import CLAIM
from cachelayer.units import source_url

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog  # imported by the layer when it opens the catalog

__all__ = ["BackfillSummary", "ProgressFn", "Tally", "WorkerPool", "count_queue", "upload_threads", "work"]

log = logging.getLogger("cachelayer")

#: Seconds an idle worker waits for the scan's wake-up before looking at the queue again
#: (files queued by other processes; the scan itself wakes the workers after each page).
SCAN_POLL = 0.5
#: Queued files whose predictions' completion times one catalog read brings ahead of the
#: claims (:meth:`WorkerPool._finished_at`): one statement for the predictions of this many
#: files, at most once per :data:`READ_AHEAD_EVERY` seconds.
READ_AHEAD = 1000
READ_AHEAD_EVERY = 1.0

ProgressFn = Callable[["BackfillSummary"], None]


@dataclass
class BackfillSummary:
    """Counts of one backfill or worker run. Sizes in bytes, times in seconds.

    ``files_stored`` were copied by this run; ``files_skipped`` were already stored;
    ``files_expired`` can never be copied (Replicate removed the data); ``files_failed``
    failed for good (see ``failures``: counts per human reason,
    :func:`~cachelayer.errors.failure_reason`); ``files_retrying`` failed for
    now and are back in the queue with a backoff; ``predictions_failed`` could not be
    recorded at all (e.g. ``CatalogWriteError``); ``files_requeued`` failed files put back
    in the queue by ``retry_failed``; ``files_leased_elsewhere`` were still held by other
    processes when this run ended. ``files_queued``: of a backfill, the files its scan
    queued; of a worker run (:func:`work`), the files it found in the queue (those it
    finished plus those still pending, counted again as it goes). ``processes``: processes
    that copied (``--processes``); ``files_stored_by_helpers``: of ``files_stored``, those
    the other processes stored (:mod:`cachelayer.processes`).
    """

    predictions_scanned: int = 0
    predictions_failed: int = 0
    predictions_removed: int = 0
    predictions_rerun: int = 0
    files_queued: int = 0
    files_stored: int = 0
    files_skipped: int = 0
    files_expired: int = 0
    files_failed: int = 0
    files_retrying: int = 0
    files_requeued: int = 0
    files_leased_elsewhere: int = 0
    bytes_stored: int = 0
    elapsed_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    files_to_copy: int = 0
    scan_complete: bool = False
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)
    processes: int = 1
    files_stored_by_helpers: int = 0

    @property
    def exit_code(self) -> int:
        """0 when every retrievable file is stored, 1 when some failed."""
        return 1 if (self.files_failed or self.files_retrying or self.predictions_failed) else 0

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


class Tally:
    """Thread-safe summary updates and rate-limited progress callbacks (every 0.2 s)."""

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
                self.reasons[failure_reason(o.error)] += 1
        self.tick()

    def prediction_failed(self, reason: str) -> None:
        """A prediction that could not be recorded at all (counted, its reason kept)."""
        with self.lock:
            self.summary.predictions_failed += 1
            self.reasons[reason] += 1
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


def upload_threads(concurrency: int) -> int:
    """Threads a pool of ``concurrency`` downloads adds for files past their download
    (``concurrency // 2``: none for one at a time)."""
    return concurrency // 2


class WorkerPool:
    """Threads that claim pending files and copy them until the queue has nothing left for
    them (``once``; after ``scan_done`` is set, if given) or ``stop`` is set.

    ``concurrency`` is how many files download at once (:class:`~cachelayer.copier.DownloadSlot`).
    ``concurrency // 2`` more threads (:func:`upload_threads`) let a file whose body has
    been read go up to the store and into the catalog while the next downloads are
    already waiting for their first byte: at 50 ms to the CDN, a 100 kB file spent 55 ms
    downloading and 20 ms uploading and being recorded, time its download slot sat idle
    (docs/BENCHMARKS.md, issue 11, session 5). Each thread holds at most one file's body
    (in memory up to the store's ``spool_memory_bytes``, then spooled to disk).
    """

    def __init__(
        self,
        catalog: Catalog,
        copier: Copier,
        tally: Tally,
        concurrency: int,
        *,
        scan_done: threading.Event | None,
        once: bool,
        stop: threading.Event | None = None,
        idle_poll: float = 0.1,
    ) -> None:
        self.catalog = catalog
        self.copier = copier
        self.tally = tally
        self.concurrency = concurrency
        self.download_slots = threading.BoundedSemaphore(max(1, concurrency))
        self.scan_done = scan_done
        self.once = once
        self.stop = stop or threading.Event()
        self.idle_poll = idle_poll
        self._finished: dict[str, datetime | None] = {}
        self._reading_ahead = threading.Lock()
        self._read_ahead_at = -READ_AHEAD_EVERY
        self._busy = 0  # threads of this pool copying a file
        self._done = False  # a thread found the run done (once)
        self._lock = threading.Lock()
        self._queued = threading.Condition()
        self.errors: list[BaseException] = []

    def queued(self, prediction: Prediction, files: int) -> None:
        """The scan just queued ``files`` files of ``prediction``: remember when it finished
        (the copier's source age; no catalog read per prediction) and wake that many threads."""
        self._remember_finished(prediction.id, prediction.finished_at)
        self.notify(files)

    def notify(self, files: int | None = None) -> None:
        """Wake idle threads now, as many as ``files`` were just queued (``None``: all of
        them): the scan calls it after each prediction it queues, so copying starts with
        the first one instead of after the page, and threads do not poll an empty queue."""
        with self._queued:
            if files is None:
                self._queued.notify_all()
            else:
                self._queued.notify(files)

    def _wait(self) -> None:
        """An empty queue: while the scan runs, wait for its :meth:`notify` (at most
        :data:`SCAN_POLL` seconds, for files another process queues); after it, for a
        run that ends (``once``), at most ``idle_poll`` seconds or until a thread of this
        pool finds the run done; else ``idle_poll`` seconds or until ``stop``."""
        if self.once or (self.scan_done is not None and not self.scan_done.is_set()):
            scanning = self.scan_done is not None and not self.scan_done.is_set()
            with self._queued:
                self._queued.wait(SCAN_POLL if scanning else self.idle_poll)
        else:
            self.stop.wait(self.idle_poll)

    def _finished_at(self, pid: str) -> datetime | None:
        """When ``pid`` finished: handed over by the scan (:meth:`queued`), else read for
        the predictions of the next :data:`READ_AHEAD` queued files at once (one thread
        reads, the others wait for it; at most once a second, as a queue of many workers
        may hold more than that many leased files ahead of this one), else read alone."""
        found, stamp = self._known(pid)
        if not found:
            with self._reading_ahead:
                found, stamp = self._known(pid)  # another thread's read ahead may have brought it
                if not found and time.monotonic() - self._read_ahead_at >= READ_AHEAD_EVERY:
                    self._read_ahead_at = time.monotonic()
                    for other, at in self.catalog.predictions.finished_at_of_queued(READ_AHEAD).items():
                        self._remember_finished(other, at)
                    found, stamp = self._known(pid)
        if not found:
            stamp = self.catalog.predictions.finished_at(pid)
            self._remember_finished(pid, stamp)
        return stamp

    def _known(self, pid: str) -> tuple[bool, datetime | None]:
        with self._lock:
            return pid in self._finished, self._finished.get(pid)

    def _remember_finished(self, pid: str, stamp: datetime | None) -> None:
        """Keep ``stamp`` for ``pid``; at most 10,000 kept (a long history's scan runs far
        ahead of the copies), the others read again from the catalog when needed."""
        with self._lock:
            if len(self._finished) >= 10_000:
                self._finished.clear()
            self._finished[pid] = stamp

    def _source_url(self, row: FileRecord) -> str:
        return source_url(self.catalog, row)

    def _idle(self) -> bool:
        """Whether this run is done: the scan (if any) finished and no pending file is left
        that this pool could ever claim. Files others hold are waited for (their holder
        stores them, or their lease lapses and this pool takes them over)."""
        if self.scan_done is not None and not self.scan_done.is_set():
            return False
        if not self.once:
            return False
        with self._lock:
            if self._done:
                return True
            if self._busy:  # a thread of this pool still has a file: it checks when it is through
                return False
        if self.catalog.queue.count_unleased_pending():
            return False
        if release_dead_local_leases(self.catalog):
            return False
        done = self.catalog.queue.count_leased_pending() == 0
        with self._lock:
            self._done = self._done or done
        return done

    def _count_busy(self, n: int) -> None:
        with self._lock:
            self._busy += n

    def _loop(self) -> None:
        # Steady state is one catalog transaction per file: recording a file stored also
        # claims this thread's next one (Copier.copy_claimed(claim_next=1)).
        ahead: list[FileRecord] = []
        failures = 0  # claims in a row that raised (a catalog outage), for the backoff
        try:
            while not self.stop.is_set():
                try:
                    row = self._next(ahead)
                except Exception as exc:
                    if self.once:
                        raise  # a run that ends reports it (the CLI: one line, exit 1)
                    failures += 1
                    delay = replace(CLAIM, base_delay_s=2 * self.idle_poll).delay(failures)
                    log.warning("could not claim a file (%s); trying again in %.0f s", exc, delay)
                    self.stop.wait(delay)
                    continue
                failures = 0
                if row is None:
                    if self._idle():
                        self.notify()  # the others need not sleep out their poll to see it
                        return
                    self._wait()
                    continue
                if row.attempts > 1:
                    self.tally.retried()
                self._count_busy(1)
                try:
                    outcome = self._copy(row, claim_next=0 if ahead else 1)
                    ahead.extend(outcome.claimed)
                    self.tally.outcome(outcome)
                finally:
                    self._count_busy(-1)
        finally:
            self.copier.release(ahead)

    def _next(self, ahead: list[FileRecord]) -> FileRecord | None:
        """The next file of this thread: one claimed ahead, else a fresh claim."""
        if ahead:
            return ahead.pop(0)
        return self.catalog.queue.claim_next(self.copier.owner, self.copier.lease_seconds)

    def _copy(self, row: FileRecord, *, claim_next: int) -> FileOutcome:
        """Copy one claimed file; whatever fails (reading its source URL or completion time
        from the catalog included) is that file's outcome, never this thread's end."""
        try:
            url, finished_at = self._source_url(row), self._finished_at(row.prediction_id)
        except Exception as exc:  # noqa: BLE001 - the file's failure, recorded on it
            return self.copier.unexpected(row, exc)
        return self.copier.copy_claimed(
            row, url, finished_at, claim_next=claim_next, download_slots=self.download_slots
        )

    def _guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surface crashes of worker threads to the caller
            self.errors.append(exc)
            self.stop.set()
            self.notify()

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._guarded, name=f"cachelayer-worker-{i}", daemon=True)
            for i in range(self.concurrency + upload_threads(self.concurrency))
        ]
        for t in threads:
            t.start()
        return threads

    def join(self, threads: Sequence[threading.Thread]) -> None:
        """Wait for ``threads``; Ctrl-C stops them (in-flight files finish or lapse).
        Re-raises the first crash of a worker thread."""
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.stop.set()
            self.notify()
            for t in threads:
                t.join(30)
            raise
        if self.errors:
            raise self.errors[0]


def work(
    catalog: Catalog,
    copier: Copier,
    *,
    concurrency: int,
    once: bool,
    retry_failed: bool = False,
    stop: threading.Event | None = None,
    progress: ProgressFn | None = None,
) -> BackfillSummary:
    """Drain the queue (``once``) or keep draining until ``stop`` is set; ``retry_failed``
    first puts failed files back in the queue. Returns the run's summary."""
    counted = [0.0]

    def with_queue(summary: BackfillSummary) -> None:
        # what is left in the queue (all processes), at most every QUEUE_COUNT_EVERY s
        if time.monotonic() - counted[0] >= QUEUE_COUNT_EVERY:
            counted[0] = time.monotonic()
            count_queue(catalog, tally)
        if progress is not None:
            progress(summary)

    tally = Tally(BackfillSummary(), with_queue if progress is not None else None)
    if retry_failed:
        tally.add(files_requeued=catalog.queue.requeue_failed())
    release_dead_local_leases(catalog)
    count_queue(catalog, tally)
    pool = WorkerPool(
        catalog,
        copier,
        tally,
        concurrency,
        scan_done=None,
        once=once,
        stop=stop,
        idle_poll=0.1 if once else 1.0,
    )
    pool.join(pool.start())
    count_queue(catalog, tally)
    finish(catalog, tally)
    return tally.summary


#: Seconds between two counts of the queue while a worker run shows its progress.
QUEUE_COUNT_EVERY = 2.0


def count_queue(catalog: Catalog, tally: Tally) -> None:
    """A worker run's ``files_queued``: the files it finished plus those pending in the
    queue now (every process's), so its progress shows what is left."""
    pending = catalog.queue.count_unleased_pending() + catalog.queue.count_leased_pending()
    with tally.lock:
        s = tally.summary
        s.files_queued = s.files_stored + s.files_expired + s.files_failed + pending


def finish(catalog: Catalog, tally: Tally) -> None:
    """Close a run's summary: what is still leased elsewhere, the final progress call."""
    tally.summary.files_leased_elsewhere = catalog.queue.count_leased_pending()
    tally.summary.scan_complete = True
    tally.tick(force=True)
