"""Typed errors raised by cachelayer.

Every error a user can cause derives from :class:`CacheLayerError`. The CLI maps
:class:`ConfigError` (and its subclasses) to exit status 2 and every other
:class:`CacheLayerError` to exit status 1, printing one line and no traceback.
"""

from __future__ import annotations

import re


class CacheLayerError(Exception):
    """Base class of every error cachelayer raises on purpose."""

    exit_code = 1


class ConfigError(CacheLayerError):
    """A setting is missing or malformed (bad URL, unknown mode, bad number)."""

    exit_code = 2


class CertificateError(ConfigError):
    """A TLS server's certificate could not be verified against the trusted CA bundle
    (``CACHELAYER_CA_BUNDLE``, ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, else certifi's).
    A setting to fix, not a transient failure: raised at the first attempt, never retried,
    and the run stops (exit status 2). ``host``: ``host:port`` of that server."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        self.host = host
        super().__init__(message)


class CatalogUnavailableError(ConfigError):
    """The catalog database cannot be reached or opened (bad URL, server down, bad credentials)."""


class CatalogOutageError(CatalogUnavailableError):
    """The catalog stopped answering during work (server restart, lost connection, a lock
    or a full disk) for longer than ``CACHELAYER_DB_RETRY_SECONDS``; every transaction that
    failed was rolled back, so nothing recorded is lost. Work failed: exit status 1."""

    exit_code = 1


class CatalogError(CacheLayerError):
    """A catalog statement failed for a reason other than an outage (a bug or a value the
    database refuses); the transaction was rolled back. The message gives the reason."""


class CatalogWriteError(CatalogError):
    """A record cannot be written even after the catalog's lossless rules (docs/SCHEMA.md,
    "Values the catalog changes"): e.g. a prediction id over 64 characters. Nothing of that
    transaction was written; ``prediction_id`` names the prediction (when known) and
    ``reason`` says why, so the caller can count it as failed and go on with the rest."""

    def __init__(self, reason: str, *, prediction_id: str | None = None) -> None:
        self.reason = reason
        self.prediction_id = prediction_id
        where = f"prediction {prediction_id[:80]!r}: " if prediction_id else ""
        super().__init__(f"cannot record {where}{reason}")


class StorageError(CacheLayerError):
    """A storage backend failed while reading or writing an object."""


class StorageConfigError(ConfigError):
    """The store cannot be used at all: missing bucket, bad credentials, unreachable endpoint."""


class BucketNotFoundError(StorageConfigError):
    """The configured S3 bucket does not exist (S3 answered ``NoSuchBucket`` / 404 on HEAD)."""


class StorageAuthError(StorageConfigError):
    """The store refused our credentials (S3 ``AccessDenied``, ``InvalidAccessKeyId``, 403)."""


class ReplicateConfigError(ConfigError):
    """Replicate refused the request for a configuration reason: bad token, unknown model."""


class ModelNotFoundError(ReplicateConfigError):
    """The model, version or deployment does not exist (Replicate answered 404), or its
    reference is malformed (expected ``owner/name``, ``owner/name:version`` or a version id)."""


class PredictionNotFoundError(CacheLayerError):
    """No prediction with that id exists on Replicate (404 on ``GET /v1/predictions/{id}``)."""


class PredictionDeletedError(CacheLayerError):
    """The prediction was deleted (``cachelayer delete``/``prune``; a ``tombstones`` row):
    nothing of it is recorded, queued or copied again."""

    def __init__(self, prediction_id: str) -> None:
        self.prediction_id = prediction_id
        super().__init__(
            f"prediction {prediction_id} was deleted (cachelayer delete); it is not copied again"
        )


class PredictionFailedError(CacheLayerError):
    """The prediction ended ``failed``, ``canceled`` or ``aborted`` (``status``); its error
    is in the message."""

    def __init__(self, prediction_id: str, status: str, error: object) -> None:
        self.prediction_id = prediction_id
        self.status = status
        self.error = error
        super().__init__(f"prediction {prediction_id} {status}: {error}")


class WaitTimeoutError(CacheLayerError):
    """The prediction was still ``status`` (starting/processing) after ``timeout`` seconds
    of waiting (``CACHELAYER_WAIT_TIMEOUT``); nothing was recorded as stored."""

    def __init__(self, prediction_id: str, status: str, timeout: float) -> None:
        self.prediction_id = prediction_id
        self.status = status
        self.timeout = timeout
        super().__init__(
            f"prediction {prediction_id} still {status} after waiting {timeout:g} s "
            "(CACHELAYER_WAIT_TIMEOUT / --wait-timeout)"
        )


class RerunError(CacheLayerError):
    """A prediction whose data is gone cannot be rerun (no recorded input, or no model,
    version or deployment to rerun)."""


class CopyError(CacheLayerError):
    """Copying one output file failed for a reason no other error types: an unexpected
    exception (the message is its class and message, cut to 500 characters), or a file
    claimed ``CACHELAYER_MAX_ATTEMPTS`` times whose process never recorded an outcome (it
    died each time). Recorded on that file (``last_error``); the other files go on."""


class FileNotRecordedError(CacheLayerError):
    """No output file with this id (``FileRecord.id``) is in the catalog
    (:meth:`cachelayer.CacheLayer.copy_file`). ``file_id``: the id asked for."""

    def __init__(self, file_id: int) -> None:
        self.file_id = file_id
        super().__init__(f"no output file {file_id} in the catalog")


class MalformedOutputError(CacheLayerError):
    """A prediction output cannot be walked: it contains a reference cycle (only possible
    for Python objects handed in by a caller; JSON has none)."""


class DownloadError(CacheLayerError):
    """A source URL could not be downloaded after the configured retries."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)


class DisallowedUrlError(DownloadError):
    """The URL is not ``http(s)`` or its host is not in the allow-list
    (``CACHELAYER_ALLOWED_HOSTS``); it was never requested."""


class MalformedUrlError(DisallowedUrlError):
    """The source URL (or ``data:`` URI) cannot be parsed unambiguously: bad or out-of-range
    port, userinfo, backslash, whitespace, non-ASCII or unclosed ``[`` in the host, a
    non-canonical IPv4 spelling... The message gives the reason in one line; nothing was
    requested."""


class DisallowedAddressError(DisallowedUrlError):
    """The host resolved only to addresses the allow-list does not permit (loopback,
    private, link-local, metadata... under a wildcard pattern); refused at connect time,
    before any connection attempt to them."""


class ApiHostUrlError(DisallowedUrlError):
    """The URL is on the Replicate API's own origin (``REPLICATE_BASE_URL``'s host and port)
    but is not the Files API's download path: an API call, never an output file. Refused
    before any request, whatever ``CACHELAYER_ALLOWED_HOSTS`` allows
    (:class:`cachelayer.token_scope.TokenScope`)."""


class TruncatedDownloadError(DownloadError):
    """The body ended before its ``Content-Length`` or the connection dropped."""


class DownloadTimeoutError(TruncatedDownloadError):
    """One attempt at one file took longer than ``CACHELAYER_DOWNLOAD_TIMEOUT`` seconds.
    Retryable like every :class:`TruncatedDownloadError`."""


class DownloadStalledError(DownloadTimeoutError):
    """The body arrived slower than ``CACHELAYER_STALL_BYTES_PER_SECOND`` over a window of
    ``CACHELAYER_STALL_WINDOW`` seconds. Retryable."""


class DownloadTooLargeError(DownloadError):
    """The body exceeded the configured size cap (``CACHELAYER_MAX_FILE_BYTES``)."""


class SourceGoneError(DownloadError):
    """The source URL answered 404, 403 or 410, or is a signed URL past its expiry.

    Internal signal that triggers a refresh of the prediction; the user sees
    :class:`ExpiredDownloadUrlError` if the refresh cannot recover the file."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, url=url)


class ExpiredDownloadUrlError(DownloadError):
    """The output URL has expired and can no longer be used to download the result.

    Raised when a source URL stopped answering (404/403/410 or a signed URL past its
    expiry) and re-reading the prediction with ``predictions.get`` did not give a working
    URL at the same output path: Replicate removes the data of API predictions one hour
    after they finish (``data_removed`` true, ``output`` null). The name and message match
    ``replicate.exceptions.ExpiredDownloadUrlError`` described in the problem note.
    """

    def __init__(
        self,
        prediction_id: str | None,
        output_path: str | None,
        url: str | None = None,
        reason: str = "",
    ) -> None:
        self.prediction_id = prediction_id
        self.output_path = output_path
        where = ""
        if prediction_id and output_path is not None:
            where = f" (prediction {prediction_id}, output path {output_path!r})"
        elif prediction_id:
            where = f" (prediction {prediction_id})"
        extra = f": {reason}" if reason else ""
        super().__init__(
            f"The output URL has expired and can no longer be used to download the result{where}{extra}",
            url=url,
        )


class WebhookVerificationError(CacheLayerError):
    """A webhook delivery was refused: missing Standard Webhooks headers, a timestamp more
    than 5 minutes off, a signature that does not match the body, or a body that is not a
    prediction. ``reason`` is one of ``missing_headers``, ``stale``, ``bad_signature``,
    ``malformed``, ``too_large``; ``status`` the HTTP status to answer (400 or 401, 413)."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


#: Errors that may go away by themselves: a catalog outage, a store failing mid-write, a
#: download cut short (timeouts and stalls included), an unexpected exception while copying
#: one file, a prediction still running. What a job queue retries (with a backoff); every
#: other error (a setting to fix, a file gone, a failed prediction) is final.
TRANSIENT_ERRORS: tuple[type[CacheLayerError], ...] = (
    CatalogOutageError,
    StorageError,
    TruncatedDownloadError,
    CopyError,
    WaitTimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the unit of work that raised ``exc`` later may succeed:
    :data:`TRANSIENT_ERRORS`, and a catalog that cannot be opened
    (:class:`CatalogUnavailableError`: a database down looks like one misnamed, so it is
    retried too, within the job queue's retry limit)."""
    return isinstance(exc, (*TRANSIENT_ERRORS, CatalogUnavailableError))


_URL = re.compile(r"""(?:\b[a-zA-Z][a-zA-Z0-9+.-]*://|\bdata:)[^\s'"]*""")
#: "prediction <id>": an id (quoted or not) of six or more characters with a digit in it.
_PREDICTION = re.compile(r"\b(predictions?)\s+'?(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{6,}'?")
_OUTPUT_PATH = re.compile(r"\boutput path\s+('[^']*'|\S+)")
_WHERE = re.compile(r"\s*\(prediction <id>(?:, output path <path>)?\)")


def _url_placeholder(m: re.Match[str]) -> str:
    text = m.group(0)
    tail = len(text) - len(text.rstrip(".,:;)]"))
    return "<url>" + (text[-tail:] if tail else "")


def failure_reason(exc: BaseException) -> str:
    """A human reason for ``exc`` that failures of the same kind share, for grouping them
    in a run's summary: its message on one line with the variable parts taken out (URLs
    and ``data:`` URIs become ``<url>``, prediction ids ``<id>``, output paths ``<path>``;
    the ``(prediction <id>, output path <path>)`` of a file's error is dropped). A message
    with nothing left falls back to the error's class name."""
    text = " ".join(str(exc).split())
    text = _URL.sub(_url_placeholder, text)
    text = text.replace("'<url>'", "<url>").replace('"<url>"', "<url>")
    text = _PREDICTION.sub(r"\1 <id>", text)
    text = _OUTPUT_PATH.sub("output path <path>", text)
    text = _WHERE.sub("", text).strip()
    return text or type(exc).__name__
