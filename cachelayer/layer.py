"""``CacheLayer``: the facade that wires Replicate, fetching, storage and the catalog."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import replicate

from cachelayer import backfill as backfill_mod
from cachelayer import replicate_api
from cachelayer.backfill import BackfillSummary, ProgressFn, ScanFilter
from cachelayer.catalog.db import ensure_schema, make_engine
from cachelayer.catalog.queries import Catalog
from cachelayer.catalog.records import FileRecord
from cachelayer.config import Settings
from cachelayer.errors import ConfigError, ExpiredDownloadUrlError
from cachelayer.fetch import Fetcher
from cachelayer.pipeline import PersistResult, Pipeline
from cachelayer.storage import Store, open_store

if TYPE_CHECKING:
    from cachelayer.verify import VerifyReport

log = logging.getLogger("cachelayer")

OnExpired = Literal["raise", "rerun"]


class CacheLayer:
    """Run Replicate models and persist their output files; hand back durable URLs.

    ``CacheLayer()`` reads the environment (see :mod:`cachelayer.config`); every setting
    is also a keyword argument (``CacheLayer(database_url=..., storage_url=...)``).
    ``client`` (a ``replicate.Client``) and ``store`` replace the ones built from settings.
    ``auto_migrate`` applies catalog migrations on open (default: only for SQLite).

    Raises on construction: :class:`~cachelayer.errors.ConfigError` for bad settings,
    :class:`~cachelayer.errors.CatalogUnavailableError` when the database cannot be opened
    or is behind (run ``cachelayer db upgrade``),
    :class:`~cachelayer.errors.BucketNotFoundError` / ``StorageAuthError`` /
    ``StorageConfigError`` when the store cannot be used.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: replicate.Client | None = None,
        store: Store | None = None,
        auto_migrate: bool | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise ConfigError("pass either settings or keyword options, not both")
        self.settings = settings or Settings.from_env(**options)
        s = self.settings
        self.engine = make_engine(s.database_url, pool_size=max(5, s.concurrency))
        if auto_migrate is None:
            auto_migrate = self.engine.dialect.name == "sqlite"
        ensure_schema(self.engine, auto_migrate=auto_migrate)
        self.catalog = Catalog(self.engine)
        self.store = store or open_store(
            s.storage_url, endpoint_url=s.s3_endpoint_url, region=s.s3_region,
            addressing_style=s.s3_addressing_style, max_pool_connections=max(10, s.concurrency * 4),
        )
        self.store.check()
        self.client = client or replicate_api.make_client(
            s.replicate_api_token, s.replicate_base_url, s.ca_bundle)
        self.fetcher = Fetcher(s.allowed_hosts, max_bytes=s.max_file_bytes,
                               pool_size=max(10, s.concurrency), retries=s.download_retries,
                               ca_bundle=s.ca_bundle)
        self.pipeline = Pipeline(s, self.catalog, self.store, self.fetcher, self._get,
                                 prefix=getattr(self.store, "prefix", ""))

    # ---- the three calls of the README ------------------------------------------------

    def run(self, ref: str, input: dict[str, Any] | None = None, *,
            on_expired: OnExpired = "raise", **params: Any) -> Any:
        """Run a model like ``replicate.run`` and return its output with every file
        replaced by a durable URL (same shape: str, list, dict, nested).

        ``ref``: ``owner/name``, ``owner/name:version``, a version id or
        ``deployments/owner/name``. ``params`` go to ``predictions.create`` (``wait``,
        ``webhook``, ``file_encoding_strategy``...). Returns once every file is stored.
        Raises :class:`~cachelayer.errors.ModelNotFoundError`,
        :class:`~cachelayer.errors.PredictionFailedError`,
        :class:`~cachelayer.errors.ExpiredDownloadUrlError` and the download/storage
        errors of :meth:`persist`.
        """
        return self._finish(self.run_result(ref, input, on_expired=on_expired, **params))

    def run_result(self, ref: str, input: dict[str, Any] | None = None, *,
                   on_expired: OnExpired = "raise", **params: Any) -> PersistResult:
        """Like :meth:`run` but returns the :class:`PersistResult` (prediction id, per-file
        records and errors) and does not raise for files that could not be copied."""
        data = replicate_api.create_and_wait(self.client, ref, input or {}, **params)
        if data.get("status") != "succeeded":
            self.catalog.record_prediction(data)
            replicate_api.check_succeeded(data)
        return self._persist(data, on_expired)

    def output_of(self, result: PersistResult) -> Any:
        """The durable output of a :class:`PersistResult` (its rerun's, if there was one).
        Raises the first file error, as :meth:`persist` does."""
        return self._finish(result)

    def persist(self, prediction: Any, *, on_expired: OnExpired = "raise") -> Any:
        """Copy every file of an existing prediction; return its durable output.

        ``prediction``: an id or a ``replicate`` ``Prediction`` (re-read with
        ``predictions.get`` so the URLs are current; one still running is polled until it
        finishes). Idempotent: files already stored
        are not downloaded again and the same durable URLs come back. If the data is gone
        (Replicate removes API predictions' files after one hour) raises
        :class:`~cachelayer.errors.ExpiredDownloadUrlError`, unless ``on_expired="rerun"``,
        which reruns the same version with the recorded input and returns the new output.
        Other errors: ``PredictionNotFoundError``, ``DisallowedUrlError``,
        ``DownloadTooLargeError``, ``TruncatedDownloadError`` (after retries),
        ``StorageError``, ``PredictionFailedError``.
        """
        return self._finish(self.persist_result(prediction, on_expired=on_expired))

    def persist_result(self, prediction: Any, *, on_expired: OnExpired = "raise") -> PersistResult:
        """Like :meth:`persist` but returns the per-file :class:`PersistResult` and does
        not raise for files that could not be copied (their errors are in it)."""
        pid = prediction if isinstance(prediction, str) else replicate_api.as_dict(prediction)["id"]
        data = replicate_api.wait_for(self.client, pid)  # a running prediction is waited for
        if data.get("status") in ("failed", "canceled"):
            self.catalog.record_prediction(data)
            replicate_api.check_succeeded(data)
        return self._persist(data, on_expired)

    def resolve(self, url: str) -> str | None:
        """The durable URL of the file once served from ``url`` (a source URL, including
        ones since rotated), or ``None`` if no stored file came from it."""
        rec = self.catalog.resolve(url)
        return self.durable_url(rec) if rec else None

    def durable_url(self, record: FileRecord) -> str:
        """The durable URL of a stored file in the configured URL mode
        (``public``: ``{base}/{key}``, ``presigned``: signed for ``presign_ttl`` s,
        ``s3``: ``s3://bucket/key`` or ``file://`` for the local store)."""
        s = self.settings
        return self.store.url(record.key, s.url_mode, public_base_url=s.public_base_url,  # type: ignore[arg-type]
                              presign_ttl=s.presign_ttl)

    # ---- internals --------------------------------------------------------------------

    def _get(self, prediction_id: str) -> dict[str, Any]:
        return replicate_api.get_prediction(self.client, prediction_id)

    def _persist(self, data: dict[str, Any], on_expired: OnExpired,
                 rerun_of: str | None = None) -> PersistResult:
        if data.get("output") is None:
            recorded = self.catalog.get_prediction(data["id"])
            if recorded is not None and recorded.output is not None:
                data = {**data, "output": recorded.output}
        result = self.pipeline.persist(data, rerun_of=rerun_of)
        self.pipeline.save_durable_output(data, [f.record for f in result.files])
        expired = any(isinstance(f.error, ExpiredDownloadUrlError) for f in result.files)
        unknown = data.get("output") is None and data.get("data_removed")
        if (expired or unknown) and on_expired == "rerun":
            result.rerun = self.rerun(data["id"])
        elif unknown:
            # Removed before we ever saw it: not even the file URLs are left to record.
            raise ExpiredDownloadUrlError(
                data["id"], None, None,
                "Replicate removed the prediction's data (data_removed) before it was recorded")
        return result

    def rerun(self, prediction_id: str) -> PersistResult:
        """Rerun a prediction whose data is gone: same version, the input recorded in the
        catalog; persist the new prediction and link it (``rerun_of``) to the old one.

        Raises :class:`~cachelayer.errors.ExpiredDownloadUrlError` when no version and
        input were recorded, and the errors of :meth:`run`."""
        rec = self.catalog.get_prediction(prediction_id)
        if rec is None or not rec.version or rec.input is None:
            raise ExpiredDownloadUrlError(prediction_id, None, None,
                                          "cannot rerun: no recorded version and input")
        log.info("rerunning %s (version %s) with its recorded input", prediction_id, rec.version)
        ref = f"{rec.model}:{rec.version}" if rec.model else rec.version
        data = replicate_api.create_and_wait(self.client, ref, dict(rec.input))
        self.catalog.record_prediction(data, rerun_of=prediction_id)
        replicate_api.check_succeeded(data)
        return self._persist(data, "raise", rerun_of=prediction_id)

    def _finish(self, result: PersistResult) -> Any:
        final = result.rerun or result
        if final.error is not None:
            raise final.error
        return self.pipeline.durable_output(
            final.prediction.get("output"), [f.record for f in final.files], self.durable_url)

    def verify(self, *, model: str | None = None, since: datetime | None = None,
               until: datetime | None = None, prediction_id: str | None = None,
               deep: bool = False, repair: bool = False,
               concurrency: int | None = None) -> VerifyReport:
        """Check every stored object of the catalog (filtered like ``catalog.list_files``)
        against its recorded size (``HEAD``) and, with ``deep``, its sha256 (full read);
        with ``repair`` re-queue (or mark ``failed``) missing/corrupt files. Never deletes.
        Returns a :class:`cachelayer.verify.VerifyReport`; see :func:`cachelayer.verify.verify`."""
        from cachelayer.verify import verify

        return verify(self, model=model, since=since, until=until, prediction_id=prediction_id,
                      deep=deep, repair=repair,
                      concurrency=concurrency or max(8, self.settings.concurrency))

    def backfill(
        self, *, since: datetime | None = None, until: datetime | None = None,
        models: Sequence[str] = (), source: str | None = None, statuses: Sequence[str] = (),
        concurrency: int | None = None, limit: int | None = None, dry_run: bool = False,
        scan_only: bool = False, on_expired: str = "skip", progress: ProgressFn | None = None,
    ) -> BackfillSummary:
        """Copy every retrievable file of the account's prediction history.

        Pages through ``predictions.list`` newest first, stopping at ``since``; keeps
        predictions created up to ``until``, of ``models`` (``owner/name``), ``source``
        (``api``/``web``) and ``statuses``; records each one (failed, text-only and removed
        ones too) and queues its files, while ``concurrency`` worker threads copy them.
        Resumes from the last checkpoint of the same filter. ``limit``: at most this many
        predictions. ``dry_run``: scan and count only; nothing is written to storage or the
        catalog. ``scan_only``: record and queue but copy nothing (leave it to
        :meth:`work` in other processes). ``on_expired="rerun"`` reruns removed
        predictions whose input was recorded.
        ``progress(summary)`` is called at most every 0.2 s from worker threads.
        Returns a :class:`~cachelayer.backfill.BackfillSummary`; raises
        :class:`~cachelayer.errors.ConfigError` for bad arguments and Replicate errors of
        the list call (after the client's retries on 429/503).
        """
        flt = ScanFilter(since=since, until=until, models=tuple(models), source=source,
                         statuses=tuple(statuses))
        return backfill_mod.backfill(
            self, flt, concurrency=concurrency or self.settings.concurrency, limit=limit,
            dry_run=dry_run, scan_only=scan_only, on_expired=on_expired, progress=progress)

    def work(self, *, concurrency: int | None = None, once: bool = True,
             stop: threading.Event | None = None,
             progress: ProgressFn | None = None) -> BackfillSummary:
        """Drain the catalog's queue of pending files with ``concurrency`` threads.

        ``once``: return when nothing is left to claim; otherwise keep polling until
        ``stop`` is set. Many processes on many machines may run this against one catalog
        and bucket: claims are leases, so no file is stored twice."""
        return backfill_mod.work(self, concurrency=concurrency or self.settings.concurrency,
                                 once=once, stop=stop, progress=progress)

    def close(self) -> None:
        """Release connections, pools and background threads."""
        self.pipeline.close()
        self.fetcher.close()
        self.store.close()
        self.engine.dispose()

    def __enter__(self) -> CacheLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
