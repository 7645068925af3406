"""``CacheLayer``: the facade and composition root.

It builds each part on first use (catalog, store, Replicate API, fetcher, copier, persister)
and delegates every call to the module that owns the concept: :mod:`cachelayer.persist`
(the persist policy), :mod:`cachelayer.scan` (backfill), :mod:`cachelayer.sweep` (the
catch-up of missed webhooks), :mod:`cachelayer.workers` (the queue), :mod:`cachelayer.verify`.
It holds no policy of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Unpack, cast

from cachelayer.errors import CacheLayerError, ConfigError, ExpiredDownloadUrlError
from cachelayer.lazy import lazy_getattr
from cachelayer.outputs import durable_output, file_url, find_files
from cachelayer.parts import Parts
from cachelayer.prediction import Prediction, held_prediction

# What copying needs (the Replicate client, requests, boto3 through the copier and the
# store) is imported when a part is first built, so the catalog queries load none of it
# (tests/test_startup.py).
if TYPE_CHECKING:
    from typing_extensions import Unpack

    from cachelayer.catalog.records import FileRecord
    from cachelayer.delete import DeleteSummary, PruneOptions
    from cachelayer.expiry import OnExpired
    from cachelayer.model_io import CreateParams, FileOutputLike, Input, Output
    from cachelayer.persist import Persister, PersistResult
    from cachelayer.prediction import PredictionLike
    from cachelayer.sweep import SweepSummary
    from cachelayer.verify import VerifyReport
    from cachelayer.webhooks import WebhookOutcome, WebhookReceiver
    from cachelayer.workers import BackfillSummary, ProgressFn

__all__ = ["CacheLayer"]

__getattr__ = lazy_getattr(__name__, {"OnExpired": "cachelayer.expiry"}, globals())

log = logging.getLogger("cachelayer")


class CacheLayer(Parts):
    """Run Replicate models and persist their output files; hand back durable URLs.

    ``CacheLayer()`` reads the environment (see :mod:`cachelayer.config`); every setting
    is also a keyword argument (``CacheLayer(database_url=..., storage_url=...)``).
    ``client`` (a 1.x ``replicate.Client``, a 2.x ``replicate.Replicate`` or a
    :class:`~cachelayer.replicate_clients.ReplicateAdapter`) and ``store`` replace the ones
    built from settings.
    ``auto_migrate`` applies catalog migrations on open (default: only for SQLite).

    Each part (catalog, store, Replicate client, copier) is built on first use, so queries
    work without a Replicate token or a reachable store. Raises on construction
    :class:`~cachelayer.errors.ConfigError` for bad settings; on first use of the catalog
    :class:`~cachelayer.errors.CatalogUnavailableError` when the database cannot be opened
    or is behind (run ``cachelayer db upgrade``); before the first copy
    :class:`~cachelayer.errors.BucketNotFoundError` / ``StorageAuthError`` /
    ``StorageConfigError`` when the store cannot be used.
    """

    # ---- the calls of the README --------------------------------------------------------

    def run(
        self,
        ref: str,
        input: Input | None = None,
        *,
        on_expired: OnExpired = "raise",
        **params: Unpack[CreateParams],
    ) -> Output:
        """Run a model like ``replicate.run`` and return its output with every file
        replaced by a durable URL (same shape: str, list, dict, nested).

        ``ref``: ``owner/name``, ``owner/name:version``, a version id or
        ``deployments/owner/name``. ``params`` go to the create call (``wait``,
        ``webhook``, ``file_encoding_strategy``...). Returns once every file is stored.
        Raises :class:`~cachelayer.errors.ModelNotFoundError`,
        :class:`~cachelayer.errors.PredictionFailedError` (failed, canceled, aborted),
        :class:`~cachelayer.errors.WaitTimeoutError` (``CACHELAYER_WAIT_TIMEOUT``),
        :class:`~cachelayer.errors.ExpiredDownloadUrlError` and the download/storage
        errors of :meth:`persist`.
        """
        return self.output_of(self.run_result(ref, input, on_expired=on_expired, **params), on_expired)

    def run_result(
        self,
        ref: str,
        input: Input | None = None,
        *,
        on_expired: OnExpired = "raise",
        **params: Unpack[CreateParams],
    ) -> PersistResult:
        """Like :meth:`run` but returns the :class:`~cachelayer.persist.PersistResult`
        (prediction, per-file records and errors) and does not raise for files that could
        not be copied."""
        persister = self.persister  # checks the store before paying for a prediction
        prediction = self.api.create_and_wait(ref, dict(input or {}), **params)
        return self._persist_finished(persister, prediction, on_expired)

    def persist(self, prediction: str | PredictionLike, *, on_expired: OnExpired = "raise") -> Output:
        """Copy every file of an existing prediction; return its durable output.

        ``prediction``: an id, a :class:`~cachelayer.prediction.Prediction`, Replicate JSON
        or a ``replicate`` ``Prediction``. An id, or a prediction not yet succeeded, is read
        with ``predictions.get`` (one still running is waited for, up to
        ``CACHELAYER_WAIT_TIMEOUT``); a succeeded one in hand (``run``'s, a webhook's) is
        used as it is, with no API call, and a URL of it that stopped answering is refreshed
        with ``predictions.get`` then.
        URLs in a given object are remembered as aliases, so :meth:`resolve` answers for
        them after Replicate rotates URLs. Idempotent: files already stored are not
        downloaded again and the same durable URLs come back. If the data is gone
        (Replicate removes API predictions' files after one hour) raises
        :class:`~cachelayer.errors.ExpiredDownloadUrlError`; ``on_expired="skip"`` returns
        the output with expired files left as their source URLs; ``on_expired="rerun"``
        reruns it once (see :mod:`cachelayer.persist`) and returns the rerun's output;
        once a rerun exists every call returns its output.
        Other errors: ``ConfigError`` (a URL or other non-prediction was passed),
        ``PredictionNotFoundError``, ``PredictionFailedError``, ``WaitTimeoutError``,
        ``DisallowedUrlError``, ``DownloadTooLargeError``, ``TruncatedDownloadError`` (after
        retries), ``StorageError``, ``RerunError``.
        """
        return self.output_of(self.persist_result(prediction, on_expired=on_expired), on_expired)

    def persist_result(
        self, prediction: str | PredictionLike, *, on_expired: OnExpired = "raise"
    ) -> PersistResult:
        """Like :meth:`persist` but returns the per-file
        :class:`~cachelayer.persist.PersistResult` and does not raise for files that could
        not be copied (their errors are in it)."""
        held = held_prediction(prediction)
        persister = self.persister  # checks the store before waiting on Replicate
        if held is not None and held.succeeded and held.output is not None:
            current = held  # in hand and finished: no re-read (the copier refreshes dead URLs)
        else:
            current = self.api.wait(held.id if held is not None else str(prediction))
        result = self._persist_finished(persister, current, on_expired)
        if held is not None:
            self._remember_urls(held, result)
        return result

    def _persist_finished(
        self, persister: Persister, prediction: Prediction, on_expired: OnExpired
    ) -> PersistResult:
        if not prediction.succeeded:
            from cachelayer.replicate_api import check_succeeded

            persister.record_prediction(prediction)  # with its manifest
            check_succeeded(prediction)
        return persister.persist(prediction, on_expired)

    def _remember_urls(self, held: Prediction, result: PersistResult) -> None:
        """Record the URLs of the caller's copy of the prediction as aliases of its files."""
        by_path = {f.record.output_path: f.record for f in result.files}
        for ref in find_files(held.output):
            rec = by_path.get(ref.path)
            if rec is not None and ref.url != rec.source_url and not ref.url.startswith("data:"):
                self.catalog.files.add_source_url(rec.id, ref.url)

    def output_of(self, result: PersistResult, on_expired: OnExpired = "raise") -> Output:
        """The durable output of a :class:`~cachelayer.persist.PersistResult` (its rerun's,
        if there was one). Raises the first file error, as :meth:`persist` does (with
        ``on_expired="skip"``, not an :class:`~cachelayer.errors.ExpiredDownloadUrlError`:
        such a file keeps its source URL)."""
        from cachelayer.persist import stored_as

        final = result.final
        skip = ExpiredDownloadUrlError if on_expired == "skip" else ()
        for f in final.files:
            if f.error is not None and not isinstance(f.error, skip):
                raise f.error
        stored = stored_as([f.record for f in final.files], self.durable_url)
        return durable_output(final.prediction.output, stored)

    def copy_file(self, file_id: int) -> FileRecord:
        """Copy one recorded file (``FileRecord.id``: claim, fetch, store, record); return
        its ``stored`` record. Idempotent and safe to run twice or at once: a stored file
        comes back as it is, a file another process holds is waited for. Raises
        ``FileNotRecordedError``, ``ExpiredDownloadUrlError``, the file's other error (retry
        it when :func:`~cachelayer.errors.is_transient`); see :func:`cachelayer.units.copy_file`."""
        from cachelayer.units import copy_file

        return copy_file(self.catalog, self.copier, file_id)

    def enqueue(self, prediction: PredictionLike) -> list[FileRecord]:
        """Record ``prediction`` (a :class:`~cachelayer.prediction.Prediction`, Replicate
        JSON or a ``replicate`` ``Prediction``; an id is not enough) and queue each of its
        files as ``pending`` for :meth:`work` (in this or any process); nothing is
        downloaded. Returns every file row of the prediction. Idempotent."""
        return self.persister.record(Prediction.of(prediction))

    def rerun(self, prediction_id: str) -> PersistResult:
        """Rerun a prediction whose data is gone, at most once (see
        :meth:`cachelayer.persist.Persister.rerun`)."""
        return self.persister.rerun(prediction_id)

    def resolve(self, url: str | FileOutputLike) -> str | None:
        """The durable URL of the file once served from ``url`` (a source URL, including
        ones since rotated, or either ``replicate`` client's ``FileOutput``), or ``None`` if
        no stored file came from it."""
        rec = self.catalog.resolve(file_url(url) or str(url))
        return self.durable_url(rec) if rec else None

    def durable_url(self, record: FileRecord) -> str:
        """The durable URL of a stored file in the configured URL mode, rendered from the
        store the file was written to (``record.store``), not the one configured now
        (``public``: ``{base}/{key}``, ``presigned``: signed for ``presign_ttl`` s,
        ``s3``: ``s3://bucket/key`` or ``file://`` for the local store, ``gateway``:
        ``{CACHELAYER_GATEWAY_URL}/files/{hmac}/{key}``, served by ``cachelayer serve``;
        see :mod:`cachelayer.durable_urls`)."""
        return self.url_policy.render(
            record.key, lambda: self.store_for(record.store), store_uri=record.store
        )

    # ---- delete and retention (cachelayer.delete) -----------------------------------------

    def delete(
        self, prediction_ids: str | Iterable[str], reason: str | None = None, *, dry_run: bool = False
    ) -> DeleteSummary:
        """Delete predictions' copies (an id or ids): each file's object from the store it
        records, the recorded input and output; a tombstone stays (``reason``), so nothing
        copies them again. Unknown ids are reported, not raised. Returns a
        :class:`cachelayer.delete.DeleteSummary`; see :meth:`cachelayer.delete.Deleter.delete`."""
        ids = [prediction_ids] if isinstance(prediction_ids, str) else list(prediction_ids)
        return self.deleter.delete(ids, reason=reason, dry_run=dry_run)

    def prune(self, older_than: timedelta, **options: Unpack[PruneOptions]) -> DeleteSummary:
        """Delete (as :meth:`delete`) every prediction created more than ``older_than`` ago;
        ``options``: ``models``, ``statuses``, ``dry_run``, ``reason``, ``progress``, ``stop``
        (see :meth:`cachelayer.delete.Deleter.prune`)."""
        return self.deleter.prune(older_than, **options)

    # ---- batch --------------------------------------------------------------------------

    def verify(
        self,
        *,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prediction_id: str | None = None,
        deep: bool = False,
        repair: bool = False,
        concurrency: int | None = None,
    ) -> VerifyReport:
        """Check every stored object of the catalog (filtered like ``catalog.list_files``)
        against its recorded size (``HEAD``) and, with ``deep``, its sha256 (full read);
        with ``repair`` re-queue (or mark ``failed``) missing/corrupt files. Never deletes.
        Returns a :class:`cachelayer.verify.VerifyReport`; see :func:`cachelayer.verify.verify`."""
        from cachelayer.verify import verify

        return verify(
            self.catalog,
            self.store,
            mirror=self.mirror,
            model=model,
            since=since,
            until=until,
            prediction_id=prediction_id,
            deep=deep,
            repair=repair,
            concurrency=concurrency or max(8, self.settings.concurrency),
        )

    def backfill(
        self,
        *,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        models: Sequence[str] = (),
        source: str | None = None,
        statuses: Sequence[str] = (),
        concurrency: int | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        scan_only: bool = False,
        on_expired: OnExpired = "skip",
        retry_failed: bool = False,
        progress: ProgressFn | None = None,
        processes: int = 1,
    ) -> BackfillSummary:
        """Copy every retrievable file of the account's prediction history.

        Pages through ``predictions.list`` newest first, stopping at ``since`` (a datetime,
        or a ``timedelta`` meaning that long ago: the checkpoint then resumes across runs); keeps
        predictions created up to ``until``, of ``models`` (``owner/name``), ``source``
        (``api``/``web``; Replicate lists web predictions of the last 14 days only) and
        ``statuses``; records each one (failed, text-only and removed ones too) and queues
        its files, while ``concurrency`` worker threads copy them. Resumes from the last
        checkpoint of the same filter, first taking predictions created since the
        interrupted run began. ``limit``: at most this many predictions.
        ``dry_run``: scan and count only; nothing is written. ``scan_only``: record and
        queue but copy nothing (leave it to :meth:`work`). ``on_expired="rerun"`` reruns
        removed predictions whose input was recorded (once each). ``retry_failed`` puts
        failed files back in the queue first. ``progress(summary)`` is called at most every
        0.2 s from worker threads (this process's copies; other processes' are added at the
        end). ``processes``: copy with that many processes in all, this one (which also
        scans) and ``processes - 1`` helpers (:mod:`cachelayer.processes`; a layer built
        from settings alone). Returns a :class:`~cachelayer.workers.BackfillSummary`;
        raises :class:`~cachelayer.errors.ConfigError` for bad arguments (``since`` not
        before ``until``), :class:`~cachelayer.errors.ModelNotFoundError` for a model of
        ``models`` Replicate does not know, and Replicate errors of the list call (after
        the client's retries on 429/503). A filter that matches nothing logs a warning.
        """
        from cachelayer import scan

        flt = scan.ScanFilter.build(since=since, until=until, models=models, source=source, statuses=statuses)
        scan.check_models(self.api, flt.models)
        # The first list call travels while the S3 client, the bucket check and the catalog
        # are built. Without a token (or with a bad base URL) self.api raises again below,
        # after the bucket check, as it always did.
        try:
            pages: scan.FirstPageAhead | None = scan.FirstPageAhead(self.api, flt.first_page())
        except CacheLayerError:
            pages = None
        copier = self.copier

        def run() -> BackfillSummary:
            return scan.backfill(
                pages or self.api,
                self.catalog,
                copier,
                self.persister,
                flt,
                concurrency=concurrency or self.settings.concurrency,
                limit=limit,
                dry_run=dry_run,
                scan_only=scan_only,
                on_expired=on_expired,
                retry_failed=retry_failed,
                progress=progress,
            )

        return self._beside(1 if dry_run or scan_only else processes, once=False, run=run)

    def _beside(self, processes: int, *, once: bool, run: Callable[[], BackfillSummary]) -> BackfillSummary:
        """``run()`` with ``processes - 1`` helper processes copying beside it."""
        from cachelayer.processes import run_beside

        if processes > 1 and (self._client is not None or self._store is not None):
            raise ConfigError("processes > 1 needs a CacheLayer built from settings (no client or store)")
        return run_beside(
            type(self),
            self.settings,
            processes,
            once=once,
            run=run,
            leased_elsewhere=self.catalog.queue.count_leased_pending,
        )

    def sweep(
        self, *, copy: bool = True, concurrency: int | None = None, stop: threading.Event | None = None
    ) -> SweepSummary:
        """One pass of the sweep, the catch-up of missed webhooks (see :mod:`cachelayer.sweep`):
        predictions created since the sweep's checkpoint (less an overlap; the last hour,
        the data's lifetime, the first time) are listed and each finished one whose files
        are not recorded is recorded and queued; predictions recorded as
        ``starting``/``processing`` are re-read by id and handled once finished; half-done
        deletes are finished, and with ``CACHELAYER_RETENTION`` older predictions pruned.
        The checkpoint moves only after a complete pass.

        ``copy``: copy what is queued with ``concurrency`` threads (default the
        ``concurrency`` setting) and return once the queue is drained; ``False``: record and
        queue only (serve's workers or ``cachelayer worker`` copy). ``stop``: set it to end
        the pass early (``summary.stopped``). Returns a
        :class:`~cachelayer.sweep.SweepSummary`. Raises
        :class:`~cachelayer.errors.ReplicateConfigError` without a token, Replicate errors of
        the list call (after the client's retries on 429/503) and catalog outages; the
        checkpoint is then where it was."""
        from cachelayer.sweep import Sweep

        persister = self.persister  # checks the store before anything is listed
        threads = (concurrency or self.settings.concurrency) if copy else 0
        sweep = Sweep(self.api, self.catalog, persister, stop=stop, deleter=self.deleter)
        return sweep.run(self.copier if copy else None, threads)

    def work(
        self,
        *,
        concurrency: int | None = None,
        once: bool = True,
        retry_failed: bool = False,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
        processes: int = 1,
    ) -> BackfillSummary:
        """Drain the catalog's queue of pending files (and the mirror's) with ``concurrency`` threads.

        ``once``: return when nothing is left (files other processes hold are waited for
        until stored or taken over); otherwise keep polling until ``stop`` is set.
        ``retry_failed`` puts failed files back in the queue first. Many processes on many
        machines may run this against one catalog and bucket: claims are leases, so no file
        is stored twice. ``processes``: that many processes in all, this one and
        ``processes - 1`` helpers (:mod:`cachelayer.processes`), stopped when this one's run
        ends; their counts are added to the summary."""
        from cachelayer import workers

        def run() -> BackfillSummary:
            n = concurrency or self.settings.concurrency
            mine = partial(workers.work, self.catalog, self.copier, once=once, stop=stop, progress=progress)
            mine = partial(mine, concurrency=n, retry_failed=retry_failed)
            if not self.settings.mirror_urls:
                return mine()
            return self.mirror.beside(mine, once=once, stop=stop, retry_failed=retry_failed)

        return self._beside(processes, once=once, run=run)

    # ---- webhooks (cachelayer serve, or the app's own view) ---------------------------------

    def create(self, ref: str, input: Input | None = None, **params: Unpack[CreateParams]) -> Prediction:
        """Create a prediction that reports to ``CACHELAYER_WEBHOOK_URL`` when it completes
        (``webhook_events_filter=["completed"]``; ``params`` may override both), record it and
        return it (typed, usually ``starting``) without waiting. The webhook receiver
        (``cachelayer serve`` or :meth:`handle_webhook`) then queues its files.
        See :func:`cachelayer.webhooks.create_prediction` for the errors."""
        from cachelayer.webhooks import create_prediction, record_created

        record = record_created(self.catalog)
        url = self.settings.webhook_url
        return create_prediction(
            self.api, record, ref, None if input is None else dict(input), webhook_url=url, **params
        )

    def handle_webhook(
        self, headers: Mapping[str, str], body: bytes, *, enqueue: Callable[[str], object] | None = None
    ) -> WebhookOutcome:
        """Verify one Replicate webhook delivery (``headers`` mapping, raw ``body`` bytes),
        record the prediction and queue its files, all before returning (synchronous; serve
        instead answers from an inbox); ``enqueue(prediction_id)``: then hand the persist of a
        succeeded prediction with files left to copy to the app's job queue (e.g. a Celery
        task's ``delay``; :mod:`cachelayer.integrations`). Returns a
        :class:`cachelayer.webhooks.WebhookOutcome`. For apps receiving webhooks in their own
        views; see :meth:`cachelayer.webhooks.WebhookReceiver.handle` (raises
        :class:`~cachelayer.errors.WebhookVerificationError` for refused deliveries)."""
        return self.webhooks.handle(headers, body, then=enqueue)

    @property
    def webhooks(self) -> WebhookReceiver:
        """The :class:`cachelayer.webhooks.WebhookReceiver` of this layer (built on first use)."""
        from cachelayer.webhooks import WebhookReceiver

        receiver: WebhookReceiver | None = self.__dict__.get("_webhooks")
        if receiver is None:
            secret = self.settings.webhook_secret
            made = WebhookReceiver(secret, lambda: self.adapter.client, lambda: self.catalog, self.enqueue)
            receiver = cast(WebhookReceiver, self.__dict__.setdefault("_webhooks", made))
        return receiver
