"""Receiving Replicate's webhooks, and creating predictions that send them.

Replicate signs each webhook the Standard Webhooks way (shared/reference/replicate-api.md,
"Webhooks"): headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``),
keyed by the base64-decoded account secret ``whsec_...`` from
``GET /v1/webhooks/default/secret``. The body is the prediction's JSON; which event it is
(``start``, ``output``, ``logs``, ``completed``) shows only in the prediction's ``status``.
Retries of one event keep its ``webhook-id``.

Verification follows the ``standardwebhooks`` reference implementation (timestamps more
than 5 minutes off the local clock are refused) but checks the headers before any of the
body is read and computes the HMAC over the body as it streams in
(:func:`parse_signed_headers`, :class:`SignatureCheck`, :func:`read_signed_body`), so an
unauthenticated request costs a bounded amount of memory whatever its size.

:class:`WebhookReceiver` is the use case behind ``POST /webhooks/replicate`` of
``cachelayer serve`` and :meth:`cachelayer.CacheLayer.handle_webhook`. ``serve``
acknowledges a verified delivery after one write, the de-duplication row holding the body
(:meth:`WebhookReceiver.accept`: the inbox); a thread of ``serve``
(:mod:`cachelayer.webhook_inbox`) then records the prediction and queues its files,
resuming whatever a crash left in the inbox. The library's :meth:`WebhookReceiver.handle`
does it all before returning. Neither ever downloads.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from cachelayer.catalog.records import FileStatus
from cachelayer.errors import CatalogWriteError, ConfigError, PredictionDeletedError, WebhookVerificationError
from cachelayer.prediction import Prediction

if TYPE_CHECKING:
    from replicate.client import Client as ReplicateClient

    from cachelayer.catalog import Catalog
    from cachelayer.catalog.records import FileRecord
    from cachelayer.catalog.server_state import ServerState
    from cachelayer.replicate_api import ReplicateApi

log = logging.getLogger("cachelayer")

__all__ = [
    "DEFAULT_EVENTS",
    "MAX_BODY_BYTES",
    "MAX_UNVERIFIED_BODIES",
    "SignatureCheck",
    "SignedHeaders",
    "WebhookOutcome",
    "WebhookReceiver",
    "create_params",
    "create_prediction",
    "fetch_webhook_secret",
    "parse_signed_headers",
    "read_signed_body",
    "record_created",
    "verify_signature",
]

#: Events ``CacheLayer.create`` asks for: only the final state matters for copying.
DEFAULT_EVENTS = ("completed",)
#: Largest webhook body accepted, in bytes (outputs inlined as ``data:`` URIs can be large).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Bytes of an unverified body kept in memory; the rest is spooled to a temporary file.
SPOOL_MEMORY_BYTES = 256 * 1024
#: Bodies read at once before their signature is known (``serve``); more wait.
MAX_UNVERIFIED_BODIES = 16
#: Seconds a delivery waits for one of those slots before ``503`` with ``Retry-After``.
UNVERIFIED_WAIT_SECONDS = 5.0
#: Deepest JSON nesting accepted in a body (arrays and objects); recording walks it.
MAX_JSON_DEPTH = 100
#: Standard Webhooks' tolerance between ``webhook-timestamp`` and the local clock, seconds.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
#: Longest ``webhook-id`` accepted (the catalog's column; Replicate's are ``msg_`` + 27).
MAX_WEBHOOK_ID = 255
#: Seconds a delivery's one write retries a catalog hiccup before ``serve`` answers 503.
ACK_RETRY_SECONDS = 5.0
#: Seconds a ``webhook-id`` is remembered; retries come within minutes, so a day is ample.
DELIVERY_MEMORY_SECONDS = 24 * 3600.0
#: A secret fetched from Replicate is re-read (once) on a signature mismatch after this long.
SECRET_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class WebhookOutcome:
    """What one accepted delivery did. ``duplicate``: its ``webhook-id`` was seen before and
    nothing was done. ``inbox``: acknowledged into ``serve``'s inbox, to be acted on in the
    background (``files`` then empty). ``files``: the prediction's file rows after queuing
    (empty for unfinished predictions and duplicates); ``queued`` how many are ``pending``."""

    webhook_id: str
    prediction_id: str
    status: str
    duplicate: bool = False
    files: list[FileRecord] = field(default_factory=list)
    inbox: bool = False
    #: the delivery's prediction as parsed (``accept``), handed to the inbox thread
    prediction: Prediction | None = field(default=None, repr=False, compare=False)

    @property
    def queued(self) -> int:
        return sum(1 for f in self.files if f.status == "pending")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``serve`` answers with; an inbox delivery has no files yet)."""
        out: dict[str, Any] = {
            "webhook_id": self.webhook_id,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "duplicate": self.duplicate,
        }
        if self.inbox:
            return {**out, "inbox": True}
        out["queued"] = self.queued
        out["files"] = [{"output_path": f.output_path, "key": f.key, "status": f.status} for f in self.files]
        return out


# ---- signatures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedHeaders:
    """The Standard Webhooks headers of one delivery, checked: ``webhook_id``, ``timestamp``
    (the header's digits) and the ``v1`` ``signatures`` (32-byte HMAC-SHA256 digests)."""

    webhook_id: str
    timestamp: str
    signatures: tuple[bytes, ...]


def parse_signed_headers(headers: Mapping[str, str], *, now: float | None = None) -> SignedHeaders:
    """Check a delivery's headers before its body is read (``headers``: any mapping, names
    case-insensitive; ``now``: Unix seconds, default the clock).

    Raises :class:`~cachelayer.errors.WebhookVerificationError` with ``reason``
    ``missing_headers`` (400), ``malformed`` (400: timestamp not a number, ``webhook-id``
    over 255 characters), ``stale`` (400: timestamp more than 5 minutes off) or
    ``bad_signature`` (401: no ``v1,<base64 of 32 bytes>`` in ``webhook-signature``).
    """
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    found = {str(k).lower(): str(v) for k, v in headers.items() if str(k).lower() in wanted}
    if not all(found.get(h) for h in wanted):
        raise WebhookVerificationError(
            "missing_headers", "webhook-id, webhook-timestamp and webhook-signature headers are required"
        )
    webhook_id, stamp, header = (found[h] for h in wanted)
    if len(webhook_id) > MAX_WEBHOOK_ID:
        raise WebhookVerificationError("malformed", f"webhook-id is over {MAX_WEBHOOK_ID} characters")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookVerificationError("malformed", "webhook-timestamp is not a number")
    skew = int(stamp) - (time.time() if now is None else now)
    if abs(skew) > TIMESTAMP_TOLERANCE_SECONDS:
        which = "old" if skew < 0 else "new"
        raise WebhookVerificationError("stale", f"webhook timestamp refused: message timestamp too {which}")
    signatures = []
    for part in header.split(" ")[:16]:
        version, _, encoded = part.partition(",")
        if version != "v1":
            continue
        with contextlib.suppress(binascii.Error, ValueError):
            digest = base64.b64decode(encoded, validate=True)
            if len(digest) == hashlib.sha256().digest_size:
                signatures.append(digest)
    if not signatures:
        raise WebhookVerificationError("bad_signature", "webhook-signature is malformed", 401)
    return SignedHeaders(webhook_id, stamp, tuple(signatures))


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (``whsec_<base64>``, the prefix optional). Raises
    :class:`~cachelayer.errors.ConfigError` when it is not base64."""
    text = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "==")
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError("the webhook signing secret is not whsec_<base64>")
    return key


class SignatureCheck:
    """HMAC-SHA256 over ``"{id}.{timestamp}."`` and the body, fed chunk by chunk
    (:meth:`update`); :meth:`matches` compares it in constant time with each signature."""

    def __init__(self, key: bytes, signed: SignedHeaders) -> None:
        self.signed = signed
        self._mac = hmac.new(key, f"{signed.webhook_id}.{signed.timestamp}.".encode(), hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def matches(self) -> bool:
        digest = self._mac.digest()
        return any(hmac.compare_digest(digest, s) for s in self.signed.signatures)


async def read_signed_body(
    chunks: AsyncIterable[bytes], check: SignatureCheck, max_bytes: int = MAX_BODY_BYTES
) -> IO[bytes]:
    """Read a body from ``chunks`` into a spool (the first 256 KiB in memory, the rest in a
    temporary file), feeding ``check`` as it comes; returns the spool at offset 0 (the
    caller closes it). Raises :class:`~cachelayer.errors.WebhookVerificationError`
    ``too_large`` (413) past ``max_bytes``."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise WebhookVerificationError("too_large", f"webhook body over {max_bytes} bytes", 413)
            check.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _chunks(spool: IO[bytes], size: int = 1024 * 1024) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(size):
        yield chunk


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check a delivery's Standard Webhooks signature and timestamp (5 minutes tolerance).

    ``headers``: any mapping (names case-insensitive); ``body``: the raw request bytes.
    Raises :class:`~cachelayer.errors.WebhookVerificationError` as
    :func:`parse_signed_headers`, ``malformed`` (400) for a body that is not UTF-8 and
    ``bad_signature`` (401) when no signature matches.
    """
    signed = parse_signed_headers(headers)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("malformed", "webhook body is not UTF-8") from None
    check = SignatureCheck(signing_key(secret), signed)
    check.update(body)
    if not check.matches():
        raise WebhookVerificationError("bad_signature", "webhook signature does not match", 401)


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


def _depth_at_most(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests arrays and objects at most ``limit`` deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def _malformed(message: str) -> WebhookVerificationError:
    return WebhookVerificationError("malformed", message[:300])


class WebhookReceiver:
    """Verifies, de-duplicates and acts on Replicate webhook deliveries. Thread-safe.

    Parts (passed lazily, so a receiver with a configured secret never builds a Replicate
    client): ``secret`` (``CACHELAYER_WEBHOOK_SECRET``, or ``None`` to read it once with
    ``client()``), ``catalog()`` (the :class:`~cachelayer.catalog.Catalog`),
    ``enqueue(prediction) -> file rows`` (records a finished prediction and queues its files,
    :meth:`cachelayer.CacheLayer.enqueue`). ``ack_retry_seconds``: how long the one write of
    an acknowledgement retries a catalog hiccup (at most the catalog's own budget).
    """

    def __init__(
        self,
        secret: str | None,
        client: Callable[[], ReplicateClient],
        catalog: Callable[[], Catalog],
        enqueue: Callable[[Prediction], list[FileRecord]],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        ack_retry_seconds: float = ACK_RETRY_SECONDS,
    ) -> None:
        self._configured = secret
        self._client = client
        self._catalog = catalog
        self._enqueue = enqueue
        self.max_body_bytes = max_body_bytes
        self.ack_retry_seconds = ack_retry_seconds
        self._lock = threading.Lock()
        self._fetched: str | None = None
        self._fetched_at = 0.0
        self._state: ServerState | None = None
        self._writes: Any = contextlib.nullcontext()

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

    def key(self, *, refresh: bool = False) -> bytes:
        """The HMAC key of :meth:`secret` (blocking the first time it is read from Replicate)."""
        return signing_key(self.secret(refresh=refresh))

    def cached_key(self) -> bytes | None:
        """The HMAC key if it needs no call to Replicate, else ``None``."""
        secret = self._configured or self._fetched
        return signing_key(secret) if secret else None

    @property
    def state(self) -> ServerState:
        """The :class:`~cachelayer.catalog.server_state.ServerState` of the catalog, on the
        catalog's :class:`~cachelayer.catalog.session.Database` with a retry budget of at most
        ``ack_retry_seconds``."""
        if self._state is None:
            from cachelayer.catalog.server_state import ServerState

            db = self._catalog().db
            state = ServerState(db.within(self.ack_retry_seconds))
            if db.dialect == "sqlite":
                # SQLite has one writer; concurrent writers wait in its busy handler, which
                # sleeps in growing steps (up to 100 ms). Queueing this process's deliveries
                # on a lock instead cut the ack p99 at 8 concurrent deliveries from 745 ms to
                # 61 ms (docs/BENCHMARKS.md, "serve").
                self._writes = threading.Lock()
            self._state = state
        return self._state

    # ---- one delivery -------------------------------------------------------------------

    def confirm(self, check: SignatureCheck, body: Callable[[], Iterable[bytes]]) -> None:
        """Accept ``check`` (fed the whole body) or raise ``bad_signature`` (401); a secret
        read from Replicate more than a minute ago is re-read once on a mismatch (the account
        may have rotated it) and ``body()`` (the body's chunks again) checked with it."""
        if check.matches():
            return
        if not self._configured and time.monotonic() - self._fetched_at > SECRET_REFRESH_SECONDS:
            again = SignatureCheck(self.key(refresh=True), check.signed)
            for chunk in body():
                again.update(chunk)
            if again.matches():
                return
        raise WebhookVerificationError("bad_signature", "webhook signature does not match", 401)

    def verify(self, headers: Mapping[str, str], body: bytes) -> SignedHeaders:
        """Verify a whole delivery (``body`` the raw bytes); returns its checked headers.
        Raises :class:`~cachelayer.errors.WebhookVerificationError` (``too_large`` 413 over
        ``max_body_bytes``, else as :func:`parse_signed_headers` and :meth:`confirm`)."""
        if len(body) > self.max_body_bytes:
            raise WebhookVerificationError("too_large", f"webhook body over {self.max_body_bytes} bytes", 413)
        signed = parse_signed_headers(headers)  # refuse unsigned requests before reading the secret
        check = SignatureCheck(self.key(), signed)
        check.update(body)
        self.confirm(check, lambda: (body,))
        return signed

    def parse(self, body: bytes) -> Prediction:
        """The prediction in a verified ``body``, checked against what the catalog can hold
        (:func:`~cachelayer.catalog.predictions.check_prediction_id`, nesting at most
        ``MAX_JSON_DEPTH``). Raises ``malformed`` (400) for a body that can never be accepted."""
        from cachelayer.catalog.predictions import check_prediction_id

        try:
            data = json.loads(body)
        except RecursionError:
            raise _malformed("webhook body nests too deeply") from None
        except ValueError as exc:  # includes UnicodeDecodeError
            raise _malformed(f"webhook body is not JSON: {exc}") from None
        if not _depth_at_most(data, MAX_JSON_DEPTH):
            raise _malformed(f"webhook body nests deeper than {MAX_JSON_DEPTH}")
        try:
            prediction = Prediction.of(data)
            check_prediction_id(prediction.id, prediction.model)
        except (ValueError, TypeError, CatalogWriteError) as exc:
            raise _malformed(f"webhook body is not a prediction the catalog can hold: {exc}") from None
        return prediction

    def accept(self, check: SignatureCheck, spool: IO[bytes]) -> WebhookOutcome:
        """``serve``'s acknowledgement of a body read by :func:`read_signed_body`: confirm
        the signature, parse, and write the delivery into the inbox (one statement): its
        de-duplication row holding the body. Blocking (run it in a thread).

        Raises :class:`~cachelayer.errors.WebhookVerificationError`,
        :class:`~cachelayer.errors.CatalogUnavailableError` (the catalog did not answer
        within ``ack_retry_seconds``) or :class:`~cachelayer.errors.CatalogError`."""
        self.confirm(check, lambda: _chunks(spool))
        spool.seek(0)
        body = spool.read()
        prediction = self.parse(body)
        webhook_id, status = check.signed.webhook_id, prediction.status.value
        state = self.state
        with self._writes:
            fresh = state.claim_delivery(webhook_id, prediction.id, status, body=body)
        if not fresh:
            log.info("webhook %s for %s was delivered before; ignored", webhook_id, prediction.id)
        return WebhookOutcome(
            webhook_id, prediction.id, status, duplicate=not fresh, inbox=fresh, prediction=prediction
        )

    def handle(
        self, headers: Mapping[str, str], body: bytes, *, then: Callable[[str], object] | None = None
    ) -> WebhookOutcome:
        """Verify and act on one delivery at once (``headers`` any case-insensitive mapping
        or dict, ``body`` the raw bytes as received): the library's synchronous mode.

        A finished prediction (``succeeded``, ``failed``, ``canceled``, ``aborted``) is
        recorded and its files queued as ``pending``; an unfinished one (``start``/``output``
        events) is recorded unless the catalog already has it finished. A repeated
        ``webhook-id`` does nothing and comes back with ``duplicate=True``. ``then``: called
        with the prediction id once a succeeded prediction with files left to copy is
        recorded (the app's job queue persists it); if it raises, the delivery is not
        remembered either (Replicate's retry is acted on).

        Raises :class:`~cachelayer.errors.WebhookVerificationError` (refused, nothing done),
        :class:`~cachelayer.errors.ReplicateConfigError` when the secret cannot be read, and
        catalog errors (then the delivery is not remembered, so Replicate's retry is acted on).
        """
        signed = self.verify(headers, body)
        prediction = self.parse(body)
        webhook_id, status = signed.webhook_id, prediction.status.value
        state = self.state
        with self._writes:
            if not state.claim_delivery(webhook_id, prediction.id, status):
                log.info("webhook %s for %s was delivered before; ignored", webhook_id, prediction.id)
                return WebhookOutcome(webhook_id, prediction.id, status, duplicate=True)
            try:
                files = self._act(prediction)
                if (
                    then is not None
                    and prediction.succeeded
                    and any(f.status != FileStatus.STORED for f in files)
                ):
                    then(prediction.id)
            except BaseException:
                state.forget_delivery(webhook_id)
                raise
        outcome = WebhookOutcome(webhook_id, prediction.id, status, files=files)
        log.info("webhook %s: %s %s, %d file(s) queued", webhook_id, prediction.id, status, outcome.queued)
        return outcome

    def _act(self, prediction: Prediction) -> list[FileRecord]:
        try:
            if prediction.terminal:
                return self._enqueue(prediction)
        except PredictionDeletedError:  # deleted (cachelayer delete): acted on by doing nothing
            log.info("webhook for deleted prediction %s ignored", prediction.id)
            return []
        self.state.record_progress(prediction)
        return []

    def process(self, webhook_id: str, prediction: Prediction | None = None) -> WebhookOutcome | None:
        """Act on the inbox delivery ``webhook_id`` (record, queue) and take it out of the
        inbox; ``None`` when it is no longer there (acted on already). ``prediction``: its
        body as parsed when it was accepted (else read from the inbox). Idempotent: acting
        twice records the same rows. Raises catalog errors (the delivery stays in the inbox)."""
        if prediction is None:
            delivery = self.state.inbox_delivery(webhook_id)
            if delivery is None:
                return None
            prediction = self.parse(delivery.body)
        with self._writes:  # on SQLite, queue behind this process's acks rather than busy-wait
            files = self._act(prediction)
            self.state.mark_processed(webhook_id)
        outcome = WebhookOutcome(webhook_id, prediction.id, prediction.status.value, files=files)
        log.info(
            "webhook %s: %s %s, %d file(s) queued", webhook_id, prediction.id, outcome.status, outcome.queued
        )
        return outcome


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
