"""Persisting one prediction: the policy, in one place.

1. **Record** the prediction and queue each output file (``pending``) in the catalog.
2. **Copy** every file not yet stored (:class:`cachelayer.copier.Copier`, concurrently).
   If Replicate has removed the data (``data_removed``), unstored files are marked
   ``expired`` without a download.
3. **Fallback**: a prediction shown with ``output: null`` (after removal) is persisted from
   the output the catalog recorded earlier.
4. **Expired files** (:data:`cachelayer.expiry.OnExpired`): ``raise``
   :class:`ExpiredDownloadUrlError` (naming prediction and output path), ``skip`` them, or
   ``rerun`` the prediction **at most once** (a claim in the catalog, safe across
   processes) from its *recorded* input (Replicate removes the input too) and return the
   rerun's output. Once a rerun exists, every later call (whatever ``on_expired``) returns
   the rerun's durable output instead of paying again (a backfill: :meth:`Persister.rerun_once`).
5. **Durable output** (:func:`cachelayer.outputs.durable_output`, files as object URIs):
   recorded by the transaction storing the last file (``Copier.copy(record_output=True)``),
   else once after the files; callers get it rendered as durable URLs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cachelayer import expiry
from cachelayer.catalog.records import FileRecord, FileStatus, NewFile, PredictionRecord
from cachelayer.config import Settings
from cachelayer.copier import Copier, FileOutcome
from cachelayer.errors import (
    CacheLayerError,
    ExpiredDownloadUrlError,
    ModelNotFoundError,
    PredictionDeletedError,
    RerunError,
)
from cachelayer.expiry import OnExpired
from cachelayer.keys import object_key
from cachelayer.outputs import durable_output, find_files
from cachelayer.prediction import Prediction, PredictionStatus, is_version_id
from cachelayer.replicate_api import ReplicateApi, check_succeeded
from cachelayer.storage.base import Store

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog  # imported by the layer when it opens the catalog

__all__ = ["PersistResult", "Persister", "rerun_ref", "stored_as"]

log = logging.getLogger("cachelayer")

#: Seconds to wait for another process's rerun claim to name its new prediction.
RERUN_CLAIM_WAIT = 60.0


@dataclass
class PersistResult:
    """Result of persisting one prediction.

    ``files`` has one outcome per output file; ``error`` is the first error (files that
    failed are recorded, the others still stored); ``rerun`` is the result for the
    prediction created (or found) by the rerun policy.
    """

    prediction_id: str
    prediction: Prediction
    files: list[FileOutcome] = field(default_factory=list)
    rerun: PersistResult | None = None

    @property
    def error(self) -> CacheLayerError | None:
        return next((f.error for f in self.files if f.error is not None), None)

    @property
    def stored(self) -> list[FileRecord]:
        return [f.record for f in self.files if f.record.status == FileStatus.STORED]

    @property
    def final(self) -> PersistResult:
        """The result whose output callers get: the rerun's, if there was one."""
        return self.rerun.final if self.rerun is not None else self


def recorded_prediction(rec: PredictionRecord) -> Prediction:
    """The typed prediction as the catalog recorded it (its ``output`` holds source URLs)."""
    return Prediction(
        id=rec.id,
        status=PredictionStatus.parse(rec.status),
        model=rec.model,
        version=rec.version,
        source=rec.source,
        input=rec.input,
        output=rec.output,
        error=rec.error,
        created_at=rec.created_at,
        started_at=rec.started_at,
        completed_at=rec.completed_at,
        data_removed=rec.data_removed,
    )


def rerun_ref(prediction: Prediction) -> str:
    """The reference that reruns ``prediction`` the way it can be created again.

    A 64-hex version reruns that version; a deployment reruns through the deployment; an
    official model (``version: "hidden"``, which ``POST /v1/predictions`` refuses with 422)
    reruns through the model endpoint. Raises :class:`ModelNotFoundError` when none applies.
    """
    if prediction.deployment:
        return f"deployments/{prediction.deployment}"
    if is_version_id(prediction.version):
        return f"{prediction.model}:{prediction.version}" if prediction.model else str(prediction.version)
    if prediction.model:
        return prediction.model
    raise ModelNotFoundError(f"cannot rerun {prediction.id}: no model, version or deployment recorded")


class Persister:
    """Persists predictions (see the module docstring); thread-safe.

    ``api()`` returns the Replicate API, built on first need (reruns, re-reads).
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: Store,
        copier: Copier,
        api: Callable[[], ReplicateApi],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.copier = copier
        self.api = api
        self.prefix = store.prefix
        self.reruns = catalog.reruns

    # ---- record and copy ----------------------------------------------------------------

    def record(self, prediction: Prediction, *, rerun_of: str | None = None) -> list[FileRecord]:
        """Record ``prediction`` and queue each of its files (``pending``); nothing is
        downloaded. Returns every file row of the prediction. Idempotent. One transaction:
        a prediction the catalog refuses leaves neither it nor any of its files. Writes its
        manifest when none of its files is left to copy (:mod:`cachelayer.manifests`)."""
        rows = self._record(prediction, rerun_of=rerun_of, claim=False)[0]
        if all(r.status != FileStatus.PENDING for r in rows):  # else its last copy writes it
            self.publish(prediction.id)
        return rows

    def record_prediction(self, prediction: Prediction) -> None:
        """Record ``prediction`` alone (one that did not succeed: no file is queued) and
        write its manifest."""
        self.catalog.predictions.record(prediction)
        self.publish(prediction.id)

    def publish(self, prediction_id: str) -> bool:
        """(Re)write ``prediction_id``'s manifest if none of its files is pending
        (:meth:`cachelayer.manifests.Manifests.publish`; never raises)."""
        return self.copier.manifests.publish(prediction_id)

    def _record(
        self, prediction: Prediction, *, rerun_of: str | None, claim: bool
    ) -> tuple[list[FileRecord], set[int]]:
        files = [
            NewFile(f.path, f.url, object_key(self.prefix, prediction.id, f.path, f.url))
            for f in find_files(prediction.output)
        ]
        return self.catalog.files.ensure_and_claim(
            prediction.id,
            files,
            store=self.store.uri,
            model=prediction.model,
            created_at=prediction.created_at,
            prediction=prediction,
            rerun_of=rerun_of,
            claim_for=(self.copier.owner, self.copier.lease_seconds) if claim else None,
        )

    def copy_files(self, prediction: Prediction, *, rerun_of: str | None = None) -> PersistResult:
        """Record ``prediction`` and copy every file not yet stored, ``settings.concurrency``
        at once. Never raises for a single file's failure: each outcome is in the result."""
        pid = prediction.id
        removed = prediction.data_removed
        # recorded and (unless the data is gone) claimed in one transaction
        rows, claimed = self._record(prediction, rerun_of=rerun_of, claim=not removed)
        urls = {f.path: f.url for f in find_files(prediction.output)}
        if removed and any(r.status != FileStatus.STORED for r in rows):
            # Data is gone: whatever is not stored yet can never be fetched again.
            self.catalog.queue.mark_prediction_expired(pid, expiry.REMOVED)
            rows = self.catalog.files.of_prediction(pid)
        if any(r.status != FileStatus.STORED for r in rows):
            expiry.warn_if_late(prediction, self.settings.expiry_margin)
        todo = [] if removed else [r for r in rows if r.status != FileStatus.STORED and r.output_path in urls]
        self.copier.release([r for r in rows if r.id in claimed and r not in todo])
        for r in todo:  # claimed files waiting for a copy thread keep their leases alive
            if r.id in claimed:
                self.copier.heartbeat.add(r.id)
        done = {r.id: FileOutcome(r, skipped=True) for r in rows if r not in todo}
        for r in rows:
            if r.id in done and r.status == FileStatus.EXPIRED:
                err = ExpiredDownloadUrlError(
                    pid, r.output_path, r.source_url, r.last_error or "data removed"
                )
                done[r.id] = FileOutcome(r, error=err)
        if todo:

            def copy(r: FileRecord) -> FileOutcome:
                url, finished = urls[r.output_path], prediction.finished_at
                if r.id in claimed:
                    return self.copier.copy_claimed(r, url, finished, record_output=True)
                return self.copier.copy(r, url, finished, record_output=True)

            workers = min(self.settings.concurrency, len(todo))
            try:
                if workers == 1:
                    outcomes = [copy(r) for r in todo]
                else:
                    with ThreadPoolExecutor(workers, thread_name_prefix="cachelayer-copy") as pool:
                        outcomes = list(pool.map(copy, todo))
            finally:
                for r in todo:  # none left renewed if a copy raised before reaching it
                    self.copier.heartbeat.discard(r.id)
            done.update({o.record.id: o for o in outcomes})
        result = PersistResult(pid, prediction)
        result.files = sorted(done.values(), key=lambda o: o.record.output_path)
        if all(o.record.status != FileStatus.PENDING for o in result.files):
            self.publish(pid)  # after its files (the last one's transaction recorded the durable output)
        return result

    # ---- the policy -------------------------------------------------------------------

    def persist(
        self, prediction: Prediction, on_expired: OnExpired = "raise", *, rerun_of: str | None = None
    ) -> PersistResult:
        """Persist ``prediction`` (a terminal, succeeded one) with the policy of the module
        docstring. Raises :class:`ExpiredDownloadUrlError` when Replicate removed the data
        before the catalog ever recorded the output (and no rerun applies; not with
        ``on_expired="skip"``); the errors of :meth:`rerun` with ``on_expired="rerun"``."""
        if prediction.output is None:
            recorded = self.catalog.predictions.get(prediction.id)
            if recorded is not None and recorded.output is not None:
                prediction = prediction.with_output(recorded.output)
        result = self.copy_files(prediction, rerun_of=rerun_of)
        rows = [f.record for f in result.files]
        by_copy = any(f.output_recorded for f in result.files)
        recorded_by_copy = by_copy and all(r.status == FileStatus.STORED for r in rows)
        # no transaction of this call stored the last file: the durable output is recorded now
        if not recorded_by_copy and self.save_durable_output(prediction, rows):
            self.publish(prediction.id)
        expired = any(isinstance(f.error, ExpiredDownloadUrlError) for f in result.files)
        unknown = prediction.output is None and prediction.data_removed
        if not (expired or unknown) or rerun_of is not None:
            return result
        earlier = self._existing_rerun(prediction.id)
        if earlier is not None:
            result.rerun = self._persist_rerun(earlier, prediction.id)
        elif on_expired == "rerun":
            result.rerun = self.rerun(prediction.id)
        elif unknown and on_expired == "raise":
            # Removed before we ever saw it: not even the file URLs are left to record.
            raise ExpiredDownloadUrlError(
                prediction.id,
                None,
                None,
                "Replicate removed the prediction's data (data_removed) before it was recorded",
            )
        return result

    def rerun(self, prediction_id: str) -> PersistResult:
        """Rerun a prediction whose data is gone, at most once across processes.

        Reruns from the input the catalog recorded (Replicate removes the input with the
        output), through the version, the model endpoint (official models report ``version:
        "hidden"``) or the deployment; records the new prediction with ``rerun_of`` and
        persists it. A rerun that already exists is persisted and returned instead.
        Raises :class:`RerunError` (no recorded input, model or version), and the errors of
        creating and waiting for a prediction (``ModelNotFoundError``,
        ``PredictionFailedError``, ``WaitTimeoutError``...); :class:`PredictionDeletedError`
        for a deleted prediction."""
        if self.catalog.tombstones.get_many([prediction_id]):
            raise PredictionDeletedError(prediction_id)
        existing = self._existing_rerun(prediction_id)
        if existing is not None:
            return self._persist_rerun(existing, prediction_id)
        return self._first_rerun(prediction_id, self.catalog.predictions.get(prediction_id))

    def rerun_once(self, prediction_id: str) -> PersistResult | None:
        """A batch's rerun of a prediction with expired files: :meth:`rerun`, unless it was
        rerun already or the catalog holds no input for it (``None``: nothing to do)."""
        rec = self.catalog.predictions.get(prediction_id)
        if rec is None or rec.input is None or self._existing_rerun(prediction_id) is not None:
            return None
        return self._first_rerun(prediction_id, rec)

    def _first_rerun(self, prediction_id: str, rec: PredictionRecord | None) -> PersistResult:
        if rec is None or rec.input is None:
            raise RerunError(
                f"cannot rerun {prediction_id}: Replicate removed its input and the catalog never "
                "recorded it (persist predictions within the hour, or run `cachelayer serve` for webhooks)"
            )
        ref = rerun_ref(recorded_prediction(rec))
        owner = self.copier.owner
        claim = self.reruns.claim(prediction_id, owner, stale_after=self.settings.wait_timeout + 300)
        if not claim.mine:
            return self._persist_rerun(self._wait_for_claim(prediction_id), prediction_id)
        log.info("rerunning %s (%s) with its recorded input", prediction_id, ref)
        try:
            created = self.api().create(ref, dict(rec.input), wait=True)
        except BaseException:
            self.reruns.release(prediction_id, owner)
            raise
        self.reruns.set_rerun(prediction_id, owner, created.id)
        self.catalog.predictions.record(created, rerun_of=prediction_id)
        return self._persist_rerun(created.id, prediction_id, created)

    def _existing_rerun(self, prediction_id: str) -> str | None:
        reruns = self.catalog.predictions.reruns_of(prediction_id)
        if reruns:
            return reruns[-1].id
        return self.reruns.get(prediction_id).rerun_id

    def _wait_for_claim(self, prediction_id: str) -> str:
        deadline = time.monotonic() + RERUN_CLAIM_WAIT
        while time.monotonic() < deadline:
            rerun_id = self.reruns.get(prediction_id).rerun_id
            if rerun_id:
                return rerun_id
            time.sleep(0.5)
        raise RerunError(f"another process is rerunning {prediction_id}; try again later")

    def _persist_rerun(self, rerun_id: str, of: str, created: Prediction | None = None) -> PersistResult:
        """Persist the rerun ``rerun_id`` of ``of``: from the catalog when every file is
        stored already, else from Replicate (waiting for it to finish)."""
        rec = self.catalog.predictions.get(rerun_id)
        files = self.catalog.files.of_prediction(rerun_id)
        all_stored = all(f.status == FileStatus.STORED for f in files)
        if rec is not None and rec.output is not None and files and all_stored:
            done = [FileOutcome(f, skipped=True) for f in files]
            return PersistResult(
                rerun_id, recorded_prediction(rec), sorted(done, key=lambda o: o.record.output_path)
            )
        final = created if created is not None and created.terminal else self.api().wait(rerun_id)
        self.catalog.predictions.record(final, rerun_of=of)
        check_succeeded(final)
        return self.persist(final, "raise", rerun_of=of)

    # ---- durable output -----------------------------------------------------------------

    def save_durable_output(self, prediction: Prediction, files: Sequence[FileRecord]) -> bool:
        """Record the output with object URIs (``s3://bucket/key``) in place of the stored
        ``files`` and ``None`` in place of the others (:func:`cachelayer.outputs.durable_output`);
        returns whether there was an output to record."""
        if prediction.output is None:
            return False
        stored = stored_as(files, lambda f: self.store.object_uri(f.key))
        durable = durable_output(prediction.output, stored, keep_sources=False)
        self.catalog.predictions.set_durable_output(prediction.id, durable)
        return True


def stored_as(files: Sequence[FileRecord], render: Callable[[FileRecord], str]) -> dict[str, str]:
    """``{output path: render(record)}`` of the stored ``files``: what
    :func:`cachelayer.outputs.durable_output` puts in their place."""
    return {f.output_path: render(f) for f in files if f.status == FileStatus.STORED}
