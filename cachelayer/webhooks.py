"""Receiving Replicate's webhooks, and creating predictions that send them.

Replicate signs each webhook the Standard Webhooks way (shared/reference/replicate-api.md,
"Webhooks"): headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), keyed by
the account's ``whsec_...`` secret from ``GET /v1/webhooks/default/secret``. The body is the
prediction's JSON; which event it is (``start``, ``output``, ``logs``, ``completed``) shows
only in the prediction's ``status``. Retries of one event keep its ``webhook-id``.

Verification is the ``standardwebhooks`` package (the reference implementation of the
scheme), which refuses timestamps more than 5 minutes off the local clock.

:class:`WebhookReceiver` is the use case behind ``POST /webhooks/replicate`` of
``cachelayer serve`` and :meth:`cachelayer.CacheLayer.handle_webhook`: verify, de-duplicate
by ``webhook-id``, record, and for a finished prediction queue its files (``pending``) for
the workers; it never downloads, so it answers in milliseconds whatever the file sizes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachelayer.errors import ConfigError, WebhookVerificationError
from cachelayer.prediction import Prediction

if TYPE_CHECKING:
    from replicate.client import Client as ReplicateClient

    from cachelayer.catalog.queries import Catalog
    from cachelayer.catalog.records import FileRecord
    from cachelayer.replicate_api import ReplicateApi

log = logging.getLogger("cachelayer")

__all__ = [
    "DEFAULT_EVENTS",
    "MAX_BODY_BYTES",
    "WebhookOutcome",
    "WebhookReceiver",
    "create_prediction",
    "create_params",
    "fetch_webhook_secret",
    "record_created",
    "verify_signature",
]

#: Events ``CacheLayer.create`` asks for: only the final state matters for copying.
DEFAULT_EVENTS = ("completed",)
#: Largest webhook body accepted, in bytes (outputs inlined as ``data:`` URIs can be large).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a ``webhook-id`` is remembered; retries come within minutes, so a day is ample.
DELIVERY_MEMORY_SECONDS = 24 * 3600.0
#: A secret fetched from Replicate is re-read (once) on a signature mismatch after this long.
SECRET_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class WebhookOutcome:
    """What one accepted delivery did. ``duplicate``: its ``webhook-id`` was seen before and
    nothing was done. ``files``: the prediction's file rows after queuing (empty for
    unfinished predictions and duplicates); ``queued`` how many of them are ``pending``."""

    webhook_id: str
    prediction_id: str
    status: str
    duplicate: bool = False
    files: list[FileRecord] = field(default_factory=list)

    @property
    def queued(self) -> int:
        return sum(1 for f in self.files if f.status == "pending")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``serve`` answers with)."""
        return {
            "webhook_id": self.webhook_id,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "duplicate": self.duplicate,
            "queued": self.queued,
            "files": [{"output_path": f.output_path, "key": f.key, "status": f.status} for f in self.files],
        }


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check a delivery's Standard Webhooks signature and timestamp (5 minutes tolerance).

    ``headers``: any mapping (names case-insensitive); ``body``: the raw request bytes.
    Raises :class:`~cachelayer.errors.WebhookVerificationError` with ``reason``
    ``missing_headers`` (400), ``stale`` (400: timestamp more than 5 minutes off),
    ``malformed`` (400: unparsable timestamp, body not UTF-8) or ``bad_signature`` (401).
    """
    from standardwebhooks.webhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError as SWError

    lowered = _required_headers(headers)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("malformed", "webhook body is not UTF-8") from None
    try:
        Webhook(secret).verify(text, lowered, json_parse=False)
    except SWError as exc:
        message = str(exc)
        if "timestamp too" in message:
            raise WebhookVerificationError("stale", f"webhook timestamp refused: {message}") from None
        if "Invalid Signature Headers" in message:
            raise WebhookVerificationError("malformed", "webhook-timestamp is not a number") from None
        raise WebhookVerificationError("bad_signature", "webhook signature does not match", 401) from None
    except (ValueError, TypeError):  # "v1" without a comma, bad base64 in the header
        raise WebhookVerificationError("bad_signature", "webhook-signature is malformed", 401) from None


def _required_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if not all(lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")):
        raise WebhookVerificationError(
            "missing_headers", "webhook-id, webhook-timestamp and webhook-signature headers are required"
        )
    return lowered


def fetch_webhook_secret(client: Any) -> str:
    """The account's signing secret from ``GET /v1/webhooks/default/secret`` (needs the API
    token). ``client``: a :class:`~cachelayer.replicate_clients.ReplicateAdapter`, or a
    ``replicate`` client object (1.x or 2.x), read through its public API. Raises
    :class:`~cachelayer.errors.ReplicateConfigError` when refused or unreachable."""
    from cachelayer.replicate_api import _errors
    from cachelayer.replicate_clients import open_adapter

    adapter = open_adapter(client, api_token=None, base_url=None, ca_bundle=None)
    with _errors("cannot read the webhook signing secret", not_found=ConfigError):
        return adapter.webhook_secret()


class WebhookReceiver:
    """Verifies, de-duplicates and acts on Replicate webhook deliveries. Thread-safe.

    Parts (passed lazily, so a receiver with a configured secret never builds a Replicate
    client): ``secret`` (``CACHELAYER_WEBHOOK_SECRET``, or ``None`` to read it once with
    ``client()``), ``catalog()`` (the :class:`~cachelayer.catalog.queries.Catalog`),
    ``enqueue(prediction) -> file rows`` (records a finished prediction and queues its files,
    :meth:`cachelayer.CacheLayer.enqueue`).
    """

    def __init__(
        self,
        secret: str | None,
        client: Callable[[], ReplicateClient],
        catalog: Callable[[], Catalog],
        enqueue: Callable[[Prediction], list[FileRecord]],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._configured = secret
        self._client = client
        self._catalog = catalog
        self._enqueue = enqueue
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._fetched: str | None = None
        self._fetched_at = 0.0
        self._state: Any = None
        self._writes: Any = contextlib.nullcontext()
        self._last_prune = 0.0

    # ---- parts --------------------------------------------------------------------------

    def secret(self, *, refresh: bool = False) -> str:
        """The signing secret: configured, or read from Replicate once (again if ``refresh``)."""
        if self._configured:
            return self._configured
        with self._lock:
            if self._fetched is None or refresh:
                self._fetched = fetch_webhook_secret(self._client())
                self._fetched_at = time.monotonic()
                log.info("read the webhook signing secret from Replicate")
            return self._fetched

    @property
    def state(self) -> Any:
        """The :class:`~cachelayer.catalog.server_state.ServerState` of the catalog."""
        if self._state is None:
            from cachelayer.catalog.server_state import ServerState

            state = ServerState(self._catalog().engine)
            if state.engine.dialect.name == "sqlite":
                # SQLite has one writer; concurrent writers wait in its busy handler, which
                # sleeps in growing steps (up to 100 ms). Queueing this process's deliveries
                # on a lock instead cut the ack p99 at 8 concurrent deliveries from 745 ms to
                # 61 ms (docs/BENCHMARKS.md, "serve").
                self._writes = threading.Lock()
            self._state = state
        return self._state

    # ---- one delivery -------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """:func:`verify_signature` with this receiver's secret; a secret read from Replicate
        is re-read once on a mismatch (the account may have rotated it)."""
        if len(body) > self.max_body_bytes:
            raise WebhookVerificationError("too_large", f"webhook body over {self.max_body_bytes} bytes", 413)
        _required_headers(headers)  # refuse unsigned requests before reading the secret
        try:
            verify_signature(self.secret(), headers, body)
        except WebhookVerificationError as exc:
            stale_secret = time.monotonic() - self._fetched_at > SECRET_REFRESH_SECONDS
            if exc.reason != "bad_signature" or self._configured or not stale_secret:
                raise
            verify_signature(self.secret(refresh=True), headers, body)

    def handle(self, headers: Mapping[str, str], body: bytes) -> WebhookOutcome:
        """Verify and act on one delivery (``headers`` any case-insensitive mapping or dict,
        ``body`` the raw bytes as received).

        A finished prediction (``succeeded``, ``failed``, ``canceled``, ``aborted``) is
        recorded and its files queued as ``pending``; an unfinished one (``start``/``output``
        events) is recorded unless the catalog already has it finished. A repeated
        ``webhook-id`` does nothing and comes back with ``duplicate=True``.

        Raises :class:`~cachelayer.errors.WebhookVerificationError` (refused, nothing done),
        :class:`~cachelayer.errors.ReplicateConfigError` when the secret cannot be read, and
        catalog errors (then the delivery is not remembered, so Replicate's retry is acted on).
        """
        self.verify(headers, body)
        try:
            data = json.loads(body)
            prediction = Prediction.of(data)
        except (ValueError, TypeError) as exc:
            raise WebhookVerificationError("malformed", f"webhook body is not a prediction: {exc}") from None
        webhook_id = next(str(v) for k, v in headers.items() if str(k).lower() == "webhook-id")
        status = prediction.status.value
        state = self.state
        with self._writes:
            if not state.claim_delivery(webhook_id, prediction.id, status):
                log.info("webhook %s for %s was delivered before; ignored", webhook_id, prediction.id)
                return WebhookOutcome(webhook_id, prediction.id, status, duplicate=True)
            try:
                if prediction.terminal:
                    files = self._enqueue(prediction)
                else:
                    state.record_progress(prediction)
                    files = []
            except BaseException:
                state.forget_delivery(webhook_id)
                raise
            self._maybe_prune()
        outcome = WebhookOutcome(webhook_id, prediction.id, status, files=files)
        log.info("webhook %s: %s %s, %d file(s) queued", webhook_id, prediction.id, status, outcome.queued)
        return outcome

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        try:
            self.state.prune_deliveries(DELIVERY_MEMORY_SECONDS)
        except Exception as exc:  # pruning is housekeeping; the next one may work
            log.warning("could not prune old webhook deliveries: %s", exc)


def create_prediction(
    api: ReplicateApi,
    record: Callable[[Prediction], Any],
    ref: str,
    input: dict[str, Any] | None,
    *,
    webhook_url: str | None,
    **params: Any,
) -> Prediction:
    """Create a prediction that reports to ``webhook_url`` (``webhook_events_filter``
    ``["completed"]`` unless given in ``params``) without waiting for it; ``record`` the
    answer (``starting``) and return it as a typed :class:`~cachelayer.prediction.Prediction`.

    ``ref`` as for :meth:`cachelayer.CacheLayer.run`. Raises
    :class:`~cachelayer.errors.ConfigError` when neither ``webhook_url``
    (``CACHELAYER_WEBHOOK_URL``) nor ``params["webhook"]`` is set, and
    :class:`~cachelayer.errors.ModelNotFoundError` /
    :class:`~cachelayer.errors.ReplicateConfigError` from Replicate.
    """
    params = create_params(webhook_url, params)
    prediction = api.create(ref, input or {}, **params)
    record(prediction)
    return prediction


def create_params(webhook_url: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for ``predictions.create`` with ``webhook`` and ``webhook_events_filter``
    filled in (callers' values win). Raises :class:`ConfigError` without a webhook URL."""
    params = dict(params)
    params.setdefault("webhook", webhook_url)
    if not params["webhook"]:
        raise ConfigError("create() needs CACHELAYER_WEBHOOK_URL (public URL of serve's /webhooks/replicate)")
    params.setdefault("webhook_events_filter", list(DEFAULT_EVENTS))
    return params


def record_created(catalog: Catalog) -> Callable[[Prediction], Any]:
    """The ``record`` of :func:`create_prediction`: a finished answer (a fast model, a
    ``wait``) through the catalog's normal record, an unfinished one without ever turning a
    finished row (its ``completed`` webhook came first) back into a running one."""
    from cachelayer.catalog.server_state import ServerState

    def record(prediction: Prediction) -> Any:
        if prediction.terminal:
            return catalog.predictions.record(prediction)
        return ServerState(catalog.engine).record_progress(prediction)

    return record
