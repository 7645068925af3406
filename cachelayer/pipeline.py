"""The pipeline: for each file of a prediction, fetch -> store -> record.

Used by every way in (``CacheLayer.run``/``persist``, the backfill workers). Each file is
claimed in the catalog before any byte moves, so two processes persisting the same
prediction copy every object once; a claim is a lease that a heartbeat renews while the
transfer runs and that lapses if the process dies. Downloads stream straight into the
store's upload (download and upload overlap; memory stays bounded by the part size).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cachelayer import expiry
from cachelayer.catalog.queries import Catalog, NewFile, parse_time
from cachelayer.catalog.records import FileRecord
from cachelayer.config import Settings
from cachelayer.errors import (
    CacheLayerError,
    DisallowedUrlError,
    DownloadError,
    ExpiredDownloadUrlError,
    SourceGoneError,
    StorageError,
    TruncatedDownloadError,
)
from cachelayer.fetch import Fetcher, parse_content_type
from cachelayer.keys import object_key
from cachelayer.outputs import file_url, find_files, lookup, replace_files
from cachelayer.storage.base import Store

log = logging.getLogger("cachelayer")

#: Times a source URL is refreshed through ``predictions.get`` before giving up on it.
MAX_REFRESHES = 2

Refresher = Callable[[str], dict[str, Any]]


def new_owner() -> str:
    """A lease owner id unique to this process and instance: ``host:pid:random``."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class FileOutcome:
    """What happened to one file: its final record and the error, if it was not stored."""

    record: FileRecord
    error: CacheLayerError | None = None
    skipped: bool = False  # already stored before this call; nothing was downloaded


@dataclass
class PersistResult:
    """Result of persisting one prediction.

    ``files`` has one outcome per output file; ``error`` is the first error (files that
    failed are recorded, the others still stored); ``rerun`` is the result for the
    prediction created by ``on_expired="rerun"``.
    """

    prediction_id: str
    prediction: dict[str, Any]
    files: list[FileOutcome] = field(default_factory=list)
    rerun: PersistResult | None = None

    @property
    def error(self) -> CacheLayerError | None:
        return next((f.error for f in self.files if f.error is not None), None)

    @property
    def stored(self) -> list[FileRecord]:
        return [f.record for f in self.files if f.record.status == "stored"]


class Heartbeat:
    """Renews the leases of in-flight files every quarter of the lease."""

    def __init__(self, catalog: Catalog, owner: str, lease_seconds: float) -> None:
        self.catalog, self.owner, self.lease_seconds = catalog, owner, lease_seconds
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, file_id: int) -> None:
        with self._lock:
            self._ids.add(file_id)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="cachelayer-heartbeat",
                                                daemon=True)
                self._thread.start()

    def discard(self, file_id: int) -> None:
        with self._lock:
            self._ids.discard(file_id)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            with self._lock:
                ids = list(self._ids)
            if ids:
                try:
                    self.catalog.renew(ids, self.owner, self.lease_seconds)
                except Exception as exc:  # keep beating; the next renewal may work
                    log.warning("lease renewal failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class Pipeline:
    """Copies the files of predictions into ``store`` and records them in ``catalog``.

    ``refresh(prediction_id) -> prediction JSON`` re-reads a prediction from Replicate
    (``predictions.get``) when a source URL stops answering. Thread-safe.
    """

    def __init__(
        self, settings: Settings, catalog: Catalog, store: Store, fetcher: Fetcher,
        refresh: Refresher, *, owner: str | None = None, prefix: str = "",
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.fetcher = fetcher
        self.refresh = refresh
        self.owner = owner or new_owner()
        self.lease_seconds = settings.lease_seconds
        self.prefix = prefix
        self.heartbeat = Heartbeat(catalog, self.owner, self.lease_seconds)

    # ---- one prediction ---------------------------------------------------------------

    def record(self, prediction: dict[str, Any], *, rerun_of: str | None = None) -> list[FileRecord]:
        """Record the prediction and queue each of its files (``pending``) in the catalog.

        Returns every file row of the prediction. Nothing is downloaded.
        """
        self.catalog.record_prediction(prediction, rerun_of=rerun_of)
        pid = prediction["id"]
        files = [
            NewFile(f.path, f.url, object_key(self.prefix, pid, f.path, f.url))
            for f in find_files(prediction.get("output"))
        ]
        return self.catalog.ensure_files(
            pid, files, store=self.store.uri, model=prediction.get("model"),
            created_at=parse_time(prediction.get("created_at")),
        )

    def persist(self, prediction: dict[str, Any], *, rerun_of: str | None = None) -> PersistResult:
        """Record ``prediction`` (Replicate JSON) and copy every file not yet stored.

        Files transfer concurrently (``settings.concurrency`` at once). Never raises for a
        single file's failure: each outcome (with its error) is in the result.
        """
        pid = prediction["id"]
        rows = self.record(prediction, rerun_of=rerun_of)
        urls = {f.path: f.url for f in find_files(prediction.get("output"))}
        removed = expiry.is_removed(prediction)
        if removed and any(r.status != "stored" for r in rows):
            # Data is gone: whatever is not stored yet can never be fetched again.
            self.catalog.mark_prediction_files_expired(
                pid, "prediction data removed by Replicate (data_removed)")
            rows = self.catalog.files_of(pid)
        age = expiry.source_age(prediction)
        if any(r.status != "stored" for r in rows):
            expiry.warn_if_late(prediction, age, self.settings.expiry_margin)
        result = PersistResult(pid, prediction)
        todo = [] if removed else [
            r for r in rows if r.status != "stored" and r.output_path in urls]
        done = {r.id: FileOutcome(r, skipped=True) for r in rows if r not in todo}
        for r in rows:
            if r.id in done and r.status == "expired":
                done[r.id] = FileOutcome(r, error=ExpiredDownloadUrlError(
                    pid, r.output_path, r.source_url, r.last_error or "data removed"))
        if todo:
            workers = min(self.settings.concurrency, len(todo))
            if workers == 1:
                outcomes = [self.copy(r, urls[r.output_path], prediction) for r in todo]
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="cachelayer-copy") as pool:
                    outcomes = list(pool.map(
                        lambda r: self.copy(r, urls[r.output_path], prediction), todo))
            done.update({o.record.id: o for o in outcomes})
        result.files = sorted(done.values(), key=lambda o: o.record.output_path)
        return result

    def durable_output(self, output: Any, files: Sequence[FileRecord],
                       render: Callable[[FileRecord], str]) -> Any:
        """``output`` with each stored file replaced by ``render(record)``; files not
        stored keep their source URL (``FileOutput`` objects become plain strings)."""
        by_path = {f.output_path: f for f in files}

        def swap(path: str, url: str) -> str:
            rec = by_path.get(path)
            return render(rec) if rec is not None and rec.status == "stored" else url

        return replace_files(output, swap)

    def save_durable_output(self, prediction: dict[str, Any], files: Sequence[FileRecord]) -> None:
        """Record the output with object URIs (``s3://bucket/key``) in place of files."""
        if prediction.get("output") is None:
            return
        durable = self.durable_output(prediction["output"], files,
                                      lambda f: self.store.object_uri(f.key))
        self.catalog.set_durable_output(prediction["id"], durable)

    # ---- one file ---------------------------------------------------------------------

    def copy(self, row: FileRecord, url: str, prediction: dict[str, Any]) -> FileOutcome:
        """Claim, fetch, store and record one file; refresh its URL through
        ``predictions.get`` if it stopped answering. Returns its outcome (never raises a
        :class:`CacheLayerError`)."""
        claimed = self._claim_or_wait(row)
        if claimed is None:
            final = self.catalog.get_file(row.id) or row
            err = None if final.status == "stored" else DownloadError(
                f"another worker left {row.key} {final.status}: {final.last_error}")
            return FileOutcome(final, error=err, skipped=final.status == "stored")
        self.heartbeat.add(row.id)
        try:
            return self._transfer(claimed, url, prediction)
        finally:
            self.heartbeat.discard(row.id)

    def copy_claimed(self, row: FileRecord, prediction: dict[str, Any]) -> FileOutcome:
        """Copy a file this pipeline already claimed (from the queue) using the recorded
        ``prediction`` JSON; the source URL is the row's (or, for ``data:`` URIs, the one at
        its output path in the recorded output)."""
        url = row.source_url
        if url.startswith("data:"):
            with contextlib.suppress(KeyError):
                url = file_url(lookup(prediction.get("output"), row.output_path)) or url
        self.heartbeat.add(row.id)
        try:
            return self._transfer(row, url, prediction)
        finally:
            self.heartbeat.discard(row.id)

    def _claim_or_wait(self, row: FileRecord) -> FileRecord | None:
        """Take the lease and return the claimed row; if another process holds it, wait
        until it stores the file (returns ``None``) or its lease lapses (then take it)."""
        while True:
            claimed = self.catalog.claim(row.id, self.owner, self.lease_seconds)
            if claimed is not None:
                return claimed
            current = self.catalog.get_file(row.id)
            if current is None or current.status == "stored":
                return None
            time.sleep(0.2)

    def _transfer(self, row: FileRecord, url: str, prediction: dict[str, Any]) -> FileOutcome:
        pid, path = row.prediction_id, row.output_path
        refreshes = 0
        attempt = 0
        age: float | None = None
        while True:
            attempt += 1
            age = expiry.source_age(prediction)
            try:
                size, sha, ctype = self._fetch_and_put(row, url)
            except DisallowedUrlError as exc:
                return self._fail(row, exc, "failed", age)
            except SourceGoneError as exc:
                if refreshes >= MAX_REFRESHES:
                    return self._expired(row, url, age, f"still failing after refresh: {exc}")
                refreshes += 1
                log.info("source URL of %s %s stopped answering (%s); re-reading the prediction",
                         pid, path or "(root)", exc)
                try:
                    prediction = self.refresh(pid)
                except CacheLayerError as rexc:
                    return self._fail(row, rexc, "failed", age, retryable=True)
                if expiry.is_removed(prediction) or prediction.get("output") is None:
                    return self._expired(row, url, age, "prediction data removed by Replicate")
                try:
                    new_url = file_url(lookup(prediction["output"], path))
                except KeyError:
                    new_url = None
                if new_url is None:
                    return self._expired(row, url, age, f"no file at output path {path!r} any more")
                if new_url != url:
                    self.catalog.add_source_url(row.id, new_url)
                url = new_url
                continue
            except TruncatedDownloadError as exc:
                if attempt >= self.settings.download_retries:
                    return self._fail(row, exc, "failed", age, retryable=True)
                delay = min(10.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.info("download of %s %s broke (%s); retry %d in %.2f s", pid, path, exc,
                         attempt, delay)
                time.sleep(delay)
                continue
            except StorageError as exc:
                return self._fail(row, exc, "failed", age, retryable=True)
            except DownloadError as exc:
                return self._fail(row, exc, "failed", age)
            final = self.catalog.mark_stored(row.id, self.owner, size=size, sha256=sha,
                                             content_type=ctype, source_age_seconds=age)
            if final is None:
                log.info("%s was recorded by another worker first", row.key)
                final = self.catalog.get_file(row.id)
                assert final is not None
            log.debug("stored %s (%d bytes, sha256 %s)", final.key, size, sha)
            return FileOutcome(final)

    def _fetch_and_put(self, row: FileRecord, url: str) -> tuple[int, str, str]:
        with self.fetcher.open(url) as dl:
            ctype = (parse_content_type(dl.content_type) or _guess_type(row.key)
                     or "application/octet-stream")
            metadata = {"prediction-id": row.prediction_id,
                        "output-path": quote(row.output_path, safe="/~")}
            self.store.put(row.key, dl, content_type=ctype, metadata=metadata,  # type: ignore[arg-type]
                           cache_control=self.settings.cache_control)
            return dl.size, dl.sha256, ctype

    def _fail(self, row: FileRecord, exc: CacheLayerError, status: str,
              age: float | None, *, retryable: bool = False) -> FileOutcome:
        """Record a failure. A transient one (``retryable``) goes back to ``pending`` with an
        exponential backoff (``available_at``) until the file has been claimed
        ``settings.max_attempts`` times; after that, and for permanent ones, ``status``."""
        log.warning("could not copy %s %s: %s", row.prediction_id, row.output_path or "(root)", exc)
        retry_after = None
        if retryable and row.attempts < self.settings.max_attempts:
            status = "pending"
            retry_after = min(300.0, 2.0 ** row.attempts) * (0.5 + random.random())
        final = self.catalog.mark_unstored(row.id, self.owner, status=status, error=str(exc),
                                           source_age_seconds=age, retry_after=retry_after)
        return FileOutcome(final or self.catalog.get_file(row.id) or row, error=exc)

    def _expired(self, row: FileRecord, url: str, age: float | None, reason: str) -> FileOutcome:
        exc = ExpiredDownloadUrlError(row.prediction_id, row.output_path, url, reason)
        return self._fail(row, exc, "expired", age)

    def close(self) -> None:
        self.heartbeat.stop()


def _guess_type(key: str) -> str | None:
    import mimetypes

    return mimetypes.guess_type(key)[0]

