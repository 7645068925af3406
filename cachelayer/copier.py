"""The copier: one output file, fetch -> store -> record.

Each file is claimed in the catalog before any byte moves (:mod:`cachelayer.leases`), so two
processes copying the same prediction store every object once. The download streams straight
into the store's upload (download and upload overlap; memory stays bounded by the part size)
and is verified on the way (size, SHA-256). A source URL that stops answering (404/403/410
or an expired signature) is refreshed through ``predictions.get`` and retried at the same
output path until :func:`cachelayer.expiry.refreshed_source` says it expired; a transient
failure (truncation, a 5xx, a storage error) goes back to the queue with a backoff until
``settings.max_attempts`` claims (:data:`~cachelayer.retry_policy.COPY_REQUEUE`; a download
cut mid-body is first retried in place, :data:`~cachelayer.retry_policy.COPY_DOWNLOAD`).

**No poison pill.** Any exception while copying one file (encoding, metadata, the store, the
catalog, a bug) is caught here: it becomes a :class:`~cachelayer.errors.CopyError` whose
reason is the exception's class and message (cut to :data:`MAX_REASON_CHARS`), retried as a
transient failure and recorded on that file; it never reaches the worker thread. A claim
counts an attempt in the claim's own transaction (before any byte moves), so a file whose
copy kills the process each time is claimed again with one more attempt; the claim after
the ``settings.max_attempts``-th is not copied but recorded ``failed``.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, cast

from cachelayer import expiry
from cachelayer.catalog.records import FileRecord, FileStatus
from cachelayer.config import Settings
from cachelayer.errors import (
    CacheLayerError,
    ConfigError,
    CopyError,
    DisallowedUrlError,
    DownloadError,
    ExpiredDownloadUrlError,
    SourceGoneError,
    StorageError,
    TruncatedDownloadError,
)
from cachelayer.fetch import Fetcher, parse_content_type
from cachelayer.leases import Heartbeat, claim_or_wait
from cachelayer.manifests import Manifests
from cachelayer.prediction import Prediction
from cachelayer.retry_policy import COPY_DOWNLOAD, COPY_REQUEUE
from cachelayer.storage.base import Store

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog  # imported by the layer when it opens the catalog

__all__ = ["MAX_REASON_CHARS", "Copier", "DownloadSlot", "FileOutcome", "Refresher"]

log = logging.getLogger("cachelayer")

#: Characters of an unexpected exception's message kept in a file's reason.
MAX_REASON_CHARS = 500

#: ``refresh(prediction_id) -> Prediction``: re-reads a prediction (``predictions.get``).
Refresher = Callable[[str], Prediction]


@dataclass
class FileOutcome:
    """What happened to one file: its final record and the error, if it was not stored;
    ``claimed``: files claimed for this owner in the same transaction that recorded this
    one stored (``copy_claimed(..., claim_next=n)``), leased and on the heartbeat;
    ``output_recorded``: that transaction also recorded the prediction's durable output
    (``record_output``: this was its last file left unstored)."""

    record: FileRecord
    error: CacheLayerError | None = None
    skipped: bool = False  # already stored before this call; nothing was downloaded
    claimed: list[FileRecord] = field(default_factory=list)
    output_recorded: bool = False


class DownloadSlot:
    """One of a pool's download slots (a :class:`threading.BoundedSemaphore` of
    ``concurrency``), held by one file from before its request is sent until its body has
    been read to the end (or the transfer ends), and not while the bytes go up to the
    store and are recorded. So a thread whose file is uploading does not count against
    the source's concurrency, and the pool keeps ``concurrency`` downloads in flight
    while others upload (see :class:`cachelayer.workers.WorkerPool`).

    A body the store streams as it reads (a multipart upload of 64 MiB or more) keeps its
    slot until its last part has been read, which is nearly the end of its upload.
    """

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._held = False

    def __enter__(self) -> DownloadSlot:
        self._slots.acquire()
        self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self._held:
            self._held = False
            self._slots.release()

    def reader(self, stream: BinaryIO) -> BinaryIO:
        """``stream`` whose ``read(n)`` gives the slot back when it returns ``b""`` (the end)."""
        return cast(BinaryIO, _ReleasingReader(stream, self))


class _ReleasingReader:
    """See :meth:`DownloadSlot.reader`."""

    def __init__(self, stream: BinaryIO, slot: DownloadSlot) -> None:
        self._stream, self._slot = stream, slot

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if not data:
            self._slot.release()
        return data


class Copier:
    """Copies single output files into ``store`` and records them in ``catalog``; thread-safe.

    ``owner`` is this process's lease owner id (:func:`cachelayer.leases.new_owner`);
    ``refresh`` re-reads a prediction when a source URL stops answering (``None``: no
    refresh, the file is recorded expired).
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: Store,
        fetcher: Fetcher,
        refresh: Refresher | None,
        *,
        owner: str,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.fetcher = fetcher
        self.refresh = refresh
        self.owner = owner
        self.lease_seconds = settings.lease_seconds
        self.heartbeat = Heartbeat(catalog, owner, self.lease_seconds)
        #: Writes each prediction's manifest once its files are through (:mod:`cachelayer.manifests`).
        self.manifests = Manifests(catalog, store)
        #: called with each file this copier stored (the mirror queues its copies; never raises)
        self.on_stored: Callable[[FileRecord], None] | None = None

    def copy(
        self, row: FileRecord, url: str, finished_at: datetime | None, *, record_output: bool = False
    ) -> FileOutcome:
        """Claim (or wait for another process's claim), fetch, store and record one file.

        ``url`` is the file's current source URL (or ``data:`` URI); ``finished_at`` when
        its prediction completed (for the source's age); ``record_output`` as for
        :meth:`copy_claimed`. Returns the outcome; never raises a :class:`CacheLayerError`."""
        claimed = claim_or_wait(self.catalog, row.id, self.owner, self.lease_seconds)
        if claimed is None:
            final = self.catalog.files.get(row.id) or row
            err = (
                None
                if final.status == "stored"
                else DownloadError(f"another worker left {row.key} {final.status}: {final.last_error}")
            )
            return FileOutcome(final, error=err, skipped=final.status == "stored")
        return self.copy_claimed(claimed, url, finished_at, record_output=record_output)

    def copy_claimed(
        self,
        row: FileRecord,
        url: str,
        finished_at: datetime | None,
        *,
        claim_next: int = 0,
        download_slots: threading.BoundedSemaphore | None = None,
        record_output: bool = False,
    ) -> FileOutcome:
        """Copy a file this process has already claimed (from the queue). ``claim_next``:
        when the file is stored, claim up to that many more files in the same transaction
        (they come back in ``FileOutcome.claimed``, leased and renewed by the heartbeat
        until the caller copies or :meth:`release` s them). ``download_slots``: the pool's
        limit on downloads in flight, held while this file downloads (:class:`DownloadSlot`).
        ``record_output`` (not with ``claim_next``): the transaction that records this file
        stored also records the prediction's durable output (this store's object URIs) if
        no file is left unstored then (``FileOutcome.output_recorded``; see
        :meth:`~cachelayer.catalog.queue.QueueRepository.mark_stored_with_output`).

        Never raises (but ``BaseException`` s such as ``KeyboardInterrupt``): any exception
        is the file's failure (:meth:`unexpected`). A ``pending`` file claimed more than
        ``settings.max_attempts`` times (its earlier claims ended without an outcome: the
        process died) is recorded ``failed`` without being copied."""
        self.heartbeat.add(row.id)
        try:
            if row.status == FileStatus.PENDING and row.attempts > self.settings.max_attempts:
                outcome = self._exhausted(row)
            else:
                outcome = self._transfer(row, url, finished_at, claim_next, download_slots, record_output)
        except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, stays its own
            outcome = self.unexpected(row, exc)
        finally:
            self.heartbeat.discard(row.id)
        for nxt in outcome.claimed:
            self.heartbeat.add(nxt.id)
        if not record_output and outcome.record.status != FileStatus.PENDING:
            # a queue's copy: the last file of its prediction writes the manifest (the
            # persister writes it after a persist's files)
            self.manifests.publish(row.prediction_id)
        return outcome

    def unexpected(self, row: FileRecord, exc: Exception) -> FileOutcome:
        """Record an exception no typed error covers (or a typed one the copy did not
        expect, such as a catalog outage while recording) as ``row``'s failure: a
        :class:`CacheLayerError` as it is, anything else as a :class:`CopyError` reading
        ``"<class>: <message>"`` (cut to :data:`MAX_REASON_CHARS`). Transient: back to the
        queue with a backoff until ``settings.max_attempts`` claims, then ``failed``. If even
        that cannot be recorded (the catalog is down), it is logged and the lease lapses
        (the claim's attempt is already counted). Never raises an ``Exception``."""
        if isinstance(exc, CacheLayerError):
            err: CacheLayerError = exc
        else:
            message = " ".join(str(exc).split())
            if len(message) > MAX_REASON_CHARS:
                message = message[: MAX_REASON_CHARS - 3] + "..."
            err = CopyError(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
        log.debug("unexpected failure copying %s", row.key, exc_info=exc)
        try:
            return self._fail(row, err, "failed", None, retryable=True)
        except Exception as again:  # noqa: BLE001 - the catalog is down too: the lease lapses
            log.warning("could not record the failure of %s: %s", row.key, again)
            return FileOutcome(row, error=err)

    def _exhausted(self, row: FileRecord) -> FileOutcome:
        """``row`` claimed more than ``max_attempts`` times without an outcome: failed."""
        earlier = f"; last error: {row.last_error}" if row.last_error else ""
        exc = CopyError(
            f"gave up after {self.settings.max_attempts} attempts: the process copying it "
            f"stopped before recording an outcome each time{earlier}"
        )
        return self._fail(row, exc, "failed", None)

    def release(self, rows: list[FileRecord]) -> None:
        """Give back files claimed ahead and not copied (a stopping worker)."""
        for r in rows:
            self.heartbeat.discard(r.id)
        if rows:
            self.catalog.queue.release([r.id for r in rows], self.owner)

    def _transfer(
        self,
        row: FileRecord,
        url: str,
        finished_at: datetime | None,
        claim_next: int,
        slots: threading.BoundedSemaphore | None = None,
        record_output: bool = False,
    ) -> FileOutcome:
        pid, path = row.prediction_id, row.output_path
        refreshes = 0
        attempt = 0
        age: float | None = None
        while True:
            attempt += 1
            age = expiry.source_age(finished_at)
            try:
                size, sha, ctype = self._fetch_and_put(row, url, slots)
            except DisallowedUrlError as exc:
                return self._fail(row, exc, "failed", age)
            except SourceGoneError as exc:
                try:
                    new_url, prediction = expiry.refreshed_source(self.refresh, pid, path, exc, refreshes)
                except expiry.Gone as gone:
                    return self._expired(row, url, age, str(gone))
                except CacheLayerError as rexc:
                    return self._fail(row, rexc, "failed", age, retryable=True)
                refreshes += 1
                finished_at = prediction.finished_at or finished_at
                if new_url != url:
                    self.catalog.files.add_source_url(row.id, new_url)
                url = new_url
                continue
            except TruncatedDownloadError as exc:
                if COPY_DOWNLOAD.with_attempts(self.settings.download_retries).gives_up_after(attempt):
                    return self._fail(row, exc, "failed", age, retryable=True)
                delay = COPY_DOWNLOAD.delay(attempt)
                log.info("download of %s %s broke (%s); retry %d in %.2f s", pid, path, exc, attempt, delay)
                time.sleep(delay)
                continue
            except StorageError as exc:
                return self._fail(row, exc, "failed", age, retryable=True)
            except DownloadError as exc:
                return self._fail(row, exc, "failed", age)
            recorded = False
            if record_output and not claim_next:
                claimed: list[FileRecord] = []
                final, recorded = self.catalog.queue.mark_stored_with_output(
                    row.id,
                    size=size,
                    sha256=sha,
                    content_type=ctype,
                    source_age_seconds=age,
                    prediction_id=pid,
                    object_uri=self.store.object_uri,
                )
            else:
                final, claimed = self.catalog.queue.mark_stored_and_claim(
                    row.id,
                    self.owner,
                    size=size,
                    sha256=sha,
                    content_type=ctype,
                    source_age_seconds=age,
                    lease_seconds=self.lease_seconds,
                    claim=claim_next,
                )
            if final is None:
                log.info("%s was recorded by another worker first", row.key)
                final = self.catalog.files.get(row.id)
                assert final is not None
                if final.status in (FileStatus.DELETING, FileStatus.DELETED):
                    # deleted while copied (cachelayer.delete): this copy goes as well; were
                    # this process to die first, the delete waits out the lease and removes it
                    self.store.delete([row.key])
                    self.catalog.queue.release([row.id], self.owner)
            log.debug("stored %s (%d bytes, sha256 %s)", final.key, size, sha)
            if self.on_stored is not None:
                self.on_stored(final)
            return FileOutcome(final, claimed=claimed, output_recorded=recorded)

    def _fetch_and_put(
        self, row: FileRecord, url: str, slots: threading.BoundedSemaphore | None = None
    ) -> tuple[int, str, str]:
        slot = DownloadSlot(slots) if slots is not None else None
        # the store hashes what it writes (and returns it): no second SHA-256 of the bytes
        with slot or contextlib.nullcontext(), self.fetcher.open(url, hashing=False) as dl:
            ctype = (
                _source_content_type(dl.content_type, url)
                or _guess_type(row.key)
                or "application/octet-stream"
            )
            # any text: the store encodes what its metadata cannot carry (S3: percent-encoding)
            metadata = {"prediction-id": row.prediction_id, "output-path": row.output_path}
            body = cast(BinaryIO, dl)  # a readable stream: put() only calls read(n)
            sha256 = self.store.put(
                row.key,
                slot.reader(body) if slot is not None else body,
                content_type=ctype,
                metadata=metadata,
                cache_control=self.settings.cache_control,
                size=dl.content_length,
            )
            return dl.size, sha256, ctype

    def _fail(
        self,
        row: FileRecord,
        exc: CacheLayerError,
        status: str,
        age: float | None,
        *,
        retryable: bool = False,
    ) -> FileOutcome:
        """Record a failure. A transient one (``retryable``) goes back to ``pending`` with an
        exponential backoff (``available_at``) until the file has been claimed
        ``settings.max_attempts`` times; after that, and for permanent ones, ``status``."""
        # a setting to fix (an untrusted certificate) reaches the caller as one line of its own
        say = log.debug if isinstance(exc, ConfigError) else log.warning
        say("could not copy %s %s: %s", row.prediction_id, row.output_path or "(root)", exc)
        retry_after = None
        if retryable and row.attempts < self.settings.max_attempts:
            status = "pending"
            retry_after = COPY_REQUEUE.delay(row.attempts)
        final = self.catalog.queue.mark_unstored(
            row.id, self.owner, status=status, error=str(exc), source_age_seconds=age, retry_after=retry_after
        )
        return FileOutcome(final or self.catalog.files.get(row.id) or row, error=exc)

    def _expired(self, row: FileRecord, url: str, age: float | None, reason: str) -> FileOutcome:
        exc = ExpiredDownloadUrlError(row.prediction_id, row.output_path, url, reason)
        return self._fail(row, exc, "expired", age)

    def close(self) -> None:
        self.heartbeat.stop()


def _source_content_type(declared: str | None, url: str) -> str | None:
    """The source's ``Content-Type`` with its parameters (``text/plain; charset=utf-8``: text
    keeps its charset, :func:`parse_content_type`). For a ``data:`` URI, ``declared`` is its
    media type and the parameters come from its header (``base64`` dropped, RFC 2397)."""
    if declared and url[:5].lower() == "data:":
        comma = url.find(",", 5, 5 + 4096)
        params = (
            [p for p in url[5:comma].split(";")[1:] if p.strip().lower() != "base64"] if comma > 0 else []
        )
        declared = ";".join([declared, *params])
    return parse_content_type(declared)


def _guess_type(key: str) -> str | None:
    return mimetypes.guess_type(key)[0]
