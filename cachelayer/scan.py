"""The history scan and the backfill that runs it beside a worker pool.

The **scan** pages through ``GET /v1/predictions`` (newest first, cursor pagination),
records every prediction it sees in the catalog and queues each of its files as ``pending``;
after each page it saves a checkpoint (cursor, counts and the newest creation time the
campaign has seen), so a rerun continues where a stopped one left off. A resumed scan first
takes the predictions created since the interrupted run began (from the top down to that
newest time), then continues from the saved cursor, so nothing created meanwhile is missed.

Facts (shared/reference/replicate-api.md): ``GET /v1/predictions?source=`` accepts only
``web``, and web listings cover only the last 14 days; ``created_after``/``created_before``
(RFC 3339) narrow the listing server-side. ``--source api`` is therefore filtered here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from cachelayer.copier import Copier
from cachelayer.errors import (
    CacheLayerError,
    CatalogWriteError,
    ConfigError,
    PredictionDeletedError,
    failure_reason,
)
from cachelayer.expiry import OnExpired, check_on_expired
from cachelayer.leases import release_dead_local_leases
from cachelayer.outputs import find_files
from cachelayer.persist import Persister
from cachelayer.prediction import Prediction, parse_time
from cachelayer.replicate_api import ReplicateApi
from cachelayer.workers import BackfillSummary, ProgressFn, Tally, WorkerPool, finish

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog  # imported by the layer when it opens the catalog

__all__ = [
    "WEB_LISTING_DAYS",
    "FirstPageAhead",
    "PageSource",
    "QueuedFn",
    "Scan",
    "ScanFilter",
    "backfill",
    "beside_pool",
    "check_models",
    "queue_prediction",
]

log = logging.getLogger("cachelayer")

#: Days of history a ``source=web`` listing covers (Replicate's API reference).
WEB_LISTING_DAYS = 14
#: Files queued by a scan after which it has PostgreSQL refresh the queue's planner
#: statistics once (:meth:`~cachelayer.catalog.queue.QueueRepository.analyze`).
ANALYZE_AFTER_FILES = 1000

#: ``on_queued(prediction, files)``: ``files`` files of ``prediction`` were just queued.
QueuedFn = Callable[[Prediction, int], None]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ScanFilter:
    """Which predictions a backfill takes: created in ``[since, until]``, of ``models``
    (``owner/name``; empty = all), from ``source`` (``api``/``web``; ``None`` = both),
    with a status in ``statuses`` (empty = all). ``since_ago``: ``since`` was given as a
    duration ("6h ago"); checkpoints are keyed by it rather than by the resolved time, so
    the same command line always resumes (:func:`cachelayer.catalog.checkpoint_name`)."""

    since: datetime | None = None
    until: datetime | None = None
    models: tuple[str, ...] = ()
    source: str | None = None
    statuses: tuple[str, ...] = ()
    since_ago: timedelta | None = None

    def __post_init__(self) -> None:
        if self.source not in (None, "api", "web"):
            raise ConfigError(f"source must be api or web, got {self.source!r}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(
                f"since ({_iso(self.since)}) is not before until ({_iso(self.until)}): "
                "no prediction can match (--since is the older end, e.g. --since 6h --until 2h)"
            )

    @classmethod
    def build(
        cls,
        *,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        models: Sequence[str] = (),
        source: str | None = None,
        statuses: Sequence[str] = (),
    ) -> ScanFilter:
        """A filter; ``since`` as a ``timedelta`` means that long before now."""
        ago = since if isinstance(since, timedelta) else None
        start = datetime.now(timezone.utc) - ago if ago is not None else since
        assert not isinstance(start, timedelta)
        return cls(start, until, tuple(sorted(models)), source, tuple(sorted(statuses)), ago)

    def checkpoint_name(self) -> str:
        """The checkpoint of this filter's meaning: different backfills do not resume each
        other, while the same command line (``--since 6h`` included) always does."""
        spec = {
            "since": self.since_ago if self.since_ago is not None else self.since,
            "until": self.until,
            "models": sorted(self.models),
            "source": self.source,
            "statuses": sorted(self.statuses),
        }
        from cachelayer.catalog.checkpoints import checkpoint_name  # SQLAlchemy: not before the first request

        return checkpoint_name("backfill", spec)

    def wants(self, p: Prediction) -> bool:
        if self.models and p.model not in self.models:
            return False
        if self.statuses and p.status.value not in self.statuses:
            return False
        return not (self.source and p.source and p.source != self.source)

    def first_page(self) -> str:
        """The path of the first listing page: ``source=web`` and the time window
        server-side (``created_after``/``created_before``)."""
        query: dict[str, str] = {}
        if self.source == "web":
            query["source"] = "web"
        if self.since is not None:
            query["created_after"] = str(_iso(self.since))
        if self.until is not None:
            query["created_before"] = str(_iso(self.until))
        return "/v1/predictions" + (f"?{urlencode(query)}" if query else "")


class PageSource(Protocol):
    """What a scan lists predictions through: :meth:`ReplicateApi.list_page`."""

    def list_page(self, cursor: str | None = None) -> tuple[list[Prediction], str | None]: ...


class FirstPageAhead:
    """``api.list_page`` whose first page (``link``, :meth:`ScanFilter.first_page`) is asked
    for in a background thread from the start, while the caller builds the S3 client,
    checks the bucket and opens the catalog: the list call's round trip (one API latency,
    tens of ms to Replicate) overlaps that work instead of following it. The page is handed
    to the first ``list_page(link)``, its error raised there as the call would have raised
    it; every other call goes to ``api``. Listing is a read, so a page asked for and never
    used (the bucket check failed) changes nothing."""

    def __init__(self, api: ReplicateApi, link: str) -> None:
        self.api, self.link = api, link
        self._page: tuple[list[Prediction], str | None] | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._fetch, name="cachelayer-first-page", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._page = self.api.list_page(self.link)
        except BaseException as exc:  # raised in the scan's thread, where it is handled
            self._error = exc

    def list_page(self, cursor: str | None = None) -> tuple[list[Prediction], str | None]:
        if cursor != self.link or self._taken:
            return self.api.list_page(cursor)
        self._taken = True
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._page is not None
        return self._page


class Scan:
    """One scan of the history into the catalog (see the module docstring)."""

    def __init__(
        self,
        api: PageSource,
        catalog: Catalog,
        persister: Persister,
        flt: ScanFilter,
        tally: Tally,
        *,
        limit: int | None,
        dry_run: bool,
        on_queued: QueuedFn | None = None,
        checkpoint: bool = True,
        take: Callable[[Prediction], int] | None = None,
    ) -> None:
        self.api, self.catalog, self.persister = api, catalog, persister
        self.flt, self.tally, self.limit, self.dry_run = flt, tally, limit, dry_run
        self.on_queued = on_queued  # on_queued(p, n): n files of prediction p were just queued
        # checkpoint=False: no resume; the caller keeps its own (the sweep's)
        self.checkpoint = checkpoint and not dry_run
        # take(p) -> files queued: what is done with each prediction listed (default: record
        # and queue, see queue_prediction)
        self.take = take or self._take
        self.seen = 0
        self.analyzed = False

    def run(self) -> None:
        flt = self.flt
        if flt.source == "web" and (
            flt.since is None or flt.since < datetime.now(timezone.utc) - timedelta(days=WEB_LISTING_DAYS)
        ):
            self._warn(
                f"Replicate lists web predictions of the last {WEB_LISTING_DAYS} days only; "
                "older ones are not reachable through the API"
            )
        if not self.checkpoint:
            self._pages(None, stop_at=None, name=None, state={})
            self.tally.summary.scan_complete = True
            return
        name = flt.checkpoint_name()
        saved = self.catalog.checkpoints.load(name)
        cursor, state = (saved.cursor, dict(saved.state)) if saved is not None else (None, {})
        if state.get("complete"):
            cursor, state = None, {}
        self.seen = int(state.get("predictions_scanned", 0))
        newest = parse_time(state.get("newest"))
        if cursor:
            self.tally.summary.resumed = True
            log.info("resuming backfill scan from checkpoint %s", name)
            # Predictions created since the interrupted run began come first.
            top_newest = self._pages(None, stop_at=newest, name=None, state=state)
            state["newest"] = _iso(top_newest or newest)
            self._pages(cursor, stop_at=None, name=name, state=state)
        else:
            self._pages(None, stop_at=None, name=name, state=state)
        self.tally.summary.scan_complete = True

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        self.tally.summary.warnings.append(text)

    def _pages(
        self, cursor: str | None, *, stop_at: datetime | None, name: str | None, state: dict[str, Any]
    ) -> datetime | None:
        """Scan from ``cursor`` (``None``: the top) until ``since``, ``stop_at`` (exclusive:
        a prediction created at or before it was seen already) or the end; saves the
        checkpoint ``name`` after each page. Returns the newest creation time seen."""
        newest_seen: datetime | None = None
        link: str | None = cursor or self.flt.first_page()
        while link:
            page, next_link = self.api.list_page(link)
            stop = False
            for p in page:
                created = p.created_at
                if created and (newest_seen is None or created > newest_seen):
                    newest_seen = created
                if stop_at is not None and created is not None and created <= stop_at:
                    stop = True
                    break
                if self.flt.until and created and created > self.flt.until:
                    continue
                if self.flt.since and created and created < self.flt.since:
                    stop = True
                    break
                if not self.flt.wants(p):
                    continue
                if self.limit is not None and self.seen >= self.limit:
                    stop = True
                    break
                self.seen += 1
                self.tally.add(predictions_scanned=1)
                try:
                    queued = self.take(p)
                except CatalogWriteError as exc:  # one bad record never stops the rest
                    log.warning("could not record prediction %s: %s", p.id, exc)
                    self.tally.prediction_failed(failure_reason(exc))
                    continue
                if queued and self.on_queued is not None:
                    self.on_queued(p, queued)  # copying starts now, not when the page is done
            link = None if stop else next_link
            if name is not None and self.checkpoint:
                if newest_seen and not state.get("newest"):
                    state["newest"] = _iso(newest_seen)
                state.update(predictions_scanned=self.seen, complete=link is None)
                self.catalog.checkpoints.save(name, link, state)
            if not self.analyzed and self.tally.summary.files_queued >= ANALYZE_AFTER_FILES:
                self.analyzed = True
                self.catalog.queue.analyze()
        return newest_seen

    def _take(self, p: Prediction) -> int:
        """Record ``p`` and queue its files; returns how many were queued."""
        tally = self.tally
        if self.dry_run:
            stored = {r.output_path for r in self.catalog.files.of_prediction(p.id) if r.status == "stored"}
            files = find_files(p.output)
            todo = [f for f in files if f.path not in stored]
            tally.add(
                files_to_copy=0 if p.data_removed else len(todo),
                files_skipped=len(files) - len(todo),
                predictions_removed=int(p.data_removed),
            )
            return 0
        return queue_prediction(self.persister, tally, p)


def queue_prediction(persister: Persister, tally: Tally, p: Prediction) -> int:
    """Record ``p`` and queue each of its files not yet stored, as a backfill does; returns
    how many were queued. A prediction whose data is gone (``data_removed``) has its
    unstored files marked ``expired`` with that reason, and nothing queued; ``data:``
    payloads (never kept in the catalog) are copied at once, while they are in hand.
    A deleted prediction (a tombstone) is skipped: nothing recorded, ``0``.
    Counts go to ``tally``. Raises :class:`~cachelayer.errors.CatalogWriteError` when the
    catalog refuses the prediction (nothing of it is written) and catalog outages."""
    try:
        if p.data_removed:
            tally.add(predictions_removed=1)
            for o in persister.copy_files(p).files:  # marks unstored files expired; no download
                tally.outcome(o)
            return 0
        rows = persister.record(p)
    except PredictionDeletedError:  # deleted (cachelayer delete): never recorded again
        return 0
    queued = sum(r.status != "stored" for r in rows)
    tally.add(files_queued=queued, files_skipped=len(rows) - queued)
    inline = {f.path: f.url for f in find_files(p.output) if f.url.startswith("data:")}
    for row in rows:
        if row.status != "stored" and row.output_path in inline:
            tally.outcome(persister.copier.copy(row, inline[row.output_path], p.finished_at))
    return queued


def beside_pool(
    catalog: Catalog, copier: Copier, tally: Tally, concurrency: int, scan: Callable[[QueuedFn], None]
) -> None:
    """Run ``scan(on_queued)`` while ``concurrency`` worker threads copy what it queues
    (``0``: none); returns once the scan is done and the queue is drained (files other
    processes hold are waited for: :class:`~cachelayer.workers.WorkerPool` with ``once``).
    Dead local leases are released first. Raises what the scan or a worker raised."""
    release_dead_local_leases(catalog)
    scan_done = threading.Event()
    pool = WorkerPool(catalog, copier, tally, concurrency, scan_done=scan_done, once=True)
    threads = pool.start()
    try:
        scan(pool.queued)
    finally:
        scan_done.set()
        pool.notify()
        pool.join(threads)


def backfill(
    api: PageSource,
    catalog: Catalog,
    copier: Copier,
    persister: Persister,
    flt: ScanFilter,
    *,
    concurrency: int,
    limit: int | None = None,
    dry_run: bool = False,
    scan_only: bool = False,
    on_expired: OnExpired = "skip",
    retry_failed: bool = False,
    progress: ProgressFn | None = None,
) -> BackfillSummary:
    """Scan and copy concurrently; returns the summary. See :meth:`CacheLayer.backfill`.
    ``scan_only``: record and queue, copy nothing (``cachelayer worker`` processes copy).
    ``retry_failed``: put files that failed earlier back in the queue first. ``on_expired``:
    ``skip`` or ``rerun`` (a batch never raises for one file), else :class:`ConfigError`."""
    check_on_expired(on_expired, ("skip", "rerun"))
    tally = Tally(BackfillSummary(dry_run=dry_run), progress)
    if dry_run:
        Scan(api, catalog, persister, flt, tally, limit=limit, dry_run=True).run()
        _none_matched(tally)
        tally.tick(force=True)
        return tally.summary
    if retry_failed:
        tally.add(files_requeued=catalog.queue.requeue_failed())

    def scan(on_queued: QueuedFn) -> None:
        Scan(api, catalog, persister, flt, tally, limit=limit, dry_run=False, on_queued=on_queued).run()

    beside_pool(catalog, copier, tally, 0 if scan_only else concurrency, scan)
    if on_expired == "rerun":
        _rerun_expired(persister, tally, sorted(tally.expired_predictions))
    _none_matched(tally)
    finish(catalog, tally)
    return tally.summary


def _none_matched(tally: Tally) -> None:
    """Say so when a backfill's filter matched no prediction (a warning, kept in the
    summary's ``warnings``): otherwise a mistyped filter silently does nothing."""
    if tally.summary.predictions_scanned == 0 and not tally.summary.resumed:
        text = "no predictions matched the filter: nothing was recorded or copied"
        log.warning("%s", text)
        tally.summary.warnings.append(text)


def check_models(api: ReplicateApi, models: Sequence[str]) -> None:
    """Ask Replicate about each of ``models`` (``owner/name``) before a scan filters by
    them, so a mistyped name is reported at once instead of matching nothing. Raises
    :class:`~cachelayer.errors.ModelNotFoundError` (404) and
    :class:`~cachelayer.errors.ConfigError` for a name not of the form ``owner/name``."""
    for model in models:
        owner, _, name = model.partition("/")
        if not owner or not name or "/" in name or ":" in name:
            raise ConfigError(f"--model takes owner/name, got {model!r}")
        api.get_model(model)


def _rerun_expired(persister: Persister, tally: Tally, ids: Sequence[str]) -> None:
    """After the copies: rerun each prediction of this run that has expired files, as
    :meth:`Persister.rerun_once` decides (at most once, from a recorded input)."""
    for pid in ids:
        try:
            result = persister.rerun_once(pid)
        except CacheLayerError as exc:
            log.warning("rerun of %s failed: %s", pid, exc)
            continue
        if result is None:
            continue
        tally.add(predictions_rerun=1)
        for o in result.files:
            tally.outcome(o)
