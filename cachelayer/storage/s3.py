"""S3-compatible object storage (AWS S3, Cloudflare R2, MinIO, moto) through boto3.

Uploads go through boto3's managed transfer (``upload_fileobj`` -> s3transfer), which
switches to a multipart upload once the body reaches ``multipart_threshold`` bytes.

S3 facts this module relies on (AWS S3 "Amazon S3 multipart upload limits" page):

* every part except the last must be at least 5 MiB; a part is at most 5 GiB;
* an upload has at most 10,000 parts, so a stream of unknown length can grow to at most
  ``10,000 x multipart_chunksize`` bytes (80,000 MiB, about 78 GiB, with the 8 MiB default);
* an object written by a single PUT is at most 5 GiB.

SigV4 presigned URLs are valid for at most 604,800 seconds (seven days) (AWS S3
"Sharing objects with presigned URLs"). User metadata travels as ``x-amz-meta-*`` HTTP
headers: S3 returns the names lower-cased, values must be US-ASCII, and all user metadata
together must stay under 2 KB (AWS S3 "Working with object metadata").

Memory of an upload from a non-seekable stream (measured against s3transfer 0.19 source,
``UploadNonSeekableInputManager``): each part is read fully into memory, wrapped in a
``BytesIO`` and queued; the queue of in-memory parts is bounded by s3transfer's
``max_in_memory_upload_chunks`` (default 10, not exposed by boto3's ``TransferConfig``
constructor) and the reading thread blocks holding one more part. This store sets that
bound to ``max_concurrency``, so one ``put`` holds at most about
``(max_concurrency + 3) x multipart_chunksize`` bytes (the ``+3``: the part being read, its
transient copy while joining short reads, and request-signing slack), 56 MiB with the
defaults, whatever the object size. Measured with tracemalloc on a 200 MiB generator-backed
upload to moto: peak 53 MiB at ``max_concurrency=4``, 85 MiB at 8; with s3transfer's default
bound of 10 chunks the peak was 104 MiB at ``max_concurrency=8``.
s3transfer also reads ``multipart_threshold`` bytes up front to decide single PUT vs
multipart, and assumes ``read(n)`` returns ``n`` bytes unless at end of stream; a raw
stream (socket, HTTP response) may return less, which would make s3transfer fall back to a
single PUT that reads the *whole rest of the stream* into memory, or send parts smaller than
5 MiB that S3 rejects. :class:`S3Store` therefore wraps the body in a reader that loops
until ``n`` bytes or end of stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, cast
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from cachelayer.errors import (
    BucketNotFoundError,
    ConfigError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
)
from cachelayer.storage.base import ObjectInfo, Store, UrlMode

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Store", "MIN_PART_SIZE", "MAX_PART_SIZE", "MAX_PARTS", "MAX_PRESIGN_TTL"]

MiB = 1024 * 1024
#: Smallest part S3 accepts, except the last one (AWS S3 multipart upload limits).
MIN_PART_SIZE = 5 * MiB
#: Largest part S3 accepts (AWS S3 multipart upload limits).
MAX_PART_SIZE = 5 * 1024 * MiB
#: Most parts in one multipart upload (AWS S3 multipart upload limits).
MAX_PARTS = 10_000
#: Longest validity of a SigV4 presigned URL, in seconds (seven days).
MAX_PRESIGN_TTL = 7 * 24 * 3600

AddressingStyle = Literal["auto", "path", "virtual"]

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_AUTH_CODES = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "AccountProblem",
}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _describe(exc: ClientError) -> str:
    """``Code (HTTP 403): message`` on one line."""
    code = _error_code(exc) or "error"
    status = _status(exc)
    message = str(exc.response.get("Error", {}).get("Message", "") or "").strip()
    text = f"{code} (HTTP {status})" if status is not None and str(status) != code else code
    if message and message != code:
        text += f": {message}"
    return " ".join(text.split())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Chained:
    """``head`` bytes already read, then the rest of ``reader``; ``read(n)`` fills ``n``."""

    def __init__(self, head: bytes, reader: _FullReader) -> None:
        self._head = head
        self._reader = reader

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._head) + len(rest := self._reader.read(-1))
            self._head += rest
        if size >= len(self._head):
            # hand the head over without copying it (s3transfer's first read is one part)
            data, self._head = self._head, b""
            return data + self._reader.read(size - len(data)) if size > len(data) else data
        data, self._head = self._head[:size], self._head[size:]
        return data


class _FullReader:
    """A read-only, deliberately non-seekable view of ``body`` whose ``read(n)`` returns
    exactly ``n`` bytes unless the stream ends first.

    Remembers the exception ``body.read`` raised (``error``) so :meth:`S3Store.put` can
    re-raise it unchanged instead of wrapping it in :class:`StorageError`.
    """

    def __init__(self, body: BinaryIO) -> None:
        self._body = body
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:  # s3transfer reads from one submission thread; be safe anyway
            try:
                data = self._read_all() if size is None or size < 0 else self._read_exact(size)
            except BaseException as exc:
                self.error = exc
                raise
            self.bytes_read += len(data)
            return data

    def _read_exact(self, size: int) -> bytes:
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = self._body.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self._body.read(MIN_PART_SIZE)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class S3Store(Store):
    """A bucket on any S3-compatible service.

    ``bucket``: the bucket name. ``prefix``: stored as :attr:`prefix` (leading and trailing
    ``/`` removed) for callers that build keys; the store itself never adds it, every method
    takes the full key. ``endpoint_url``: e.g. ``https://<account>.r2.cloudflarestorage.com``
    or ``http://127.0.0.1:9000`` (MinIO); ``None`` lets boto3 resolve it (AWS, or
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``). ``region``: ``None`` lets boto3 resolve
    it (``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / profile); R2 uses ``auto``.
    ``addressing_style``: ``path`` (``host/bucket/key``, needed for MinIO and IP endpoints),
    ``virtual`` (``bucket.host/key``) or ``auto`` (botocore decides).
    ``access_key_id`` / ``secret_access_key`` / ``session_token``: explicit credentials;
    when absent boto3's credential chain is used (env vars, profile, SSO, instance role).

    Upload tuning, in bytes: ``multipart_threshold`` (bodies of at least this size use a
    multipart upload), ``multipart_chunksize`` (part size; S3 needs 5 MiB..5 GiB, so values
    outside raise ``ValueError``), ``max_concurrency`` (parts in flight per ``put``, which
    also bounds parts buffered in memory, see the module docstring; the default 3 keeps a
    500 MiB persist under 150 MiB peak RSS, docs/BENCHMARKS.md),
    ``max_pool_connections`` (HTTP connections of the shared client; size it at least
    ``max_concurrency x`` concurrent puts). ``cache_control``: default ``Cache-Control``
    for :meth:`put`. ``client``: a ready boto3 S3 client to use instead of building one
    (then the connection arguments are ignored and :meth:`close` leaves it open).

    Checksums: botocore >= 1.36 adds a CRC32 checksum to uploads by default; for a service
    that rejects it, set ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (read by
    botocore itself; Cloudflare documents this workaround for its R2 examples).

    One boto3 client is built here and shared by all threads (boto3 clients are
    thread-safe, sessions are not). Raises :class:`ConfigError` for a bad
    ``addressing_style`` and ``ValueError`` for out-of-range sizes.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: AddressingStyle = "auto",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        multipart_threshold: int = 8 * MiB,
        multipart_chunksize: int = 8 * MiB,
        max_concurrency: int = 3,
        max_pool_connections: int = 32,
        cache_control: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3 bucket name is empty")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(
                f"S3 addressing style must be auto, path or virtual, got {addressing_style!r}"
            )
        if not MIN_PART_SIZE <= multipart_chunksize <= MAX_PART_SIZE:
            raise ValueError(
                f"multipart_chunksize must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} "
                f"bytes (S3 part size limits), got {multipart_chunksize}"
            )
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, got {multipart_threshold}")
        if max_concurrency < 1 or max_pool_connections < 1:
            raise ValueError("max_concurrency and max_pool_connections must be at least 1")

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}"
        self.cache_control = cache_control
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max_concurrency
        self._owns_client = client is None
        if client is None:
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
            )
            config = Config(
                s3={"addressing_style": addressing_style},
                signature_version="s3v4",
                max_pool_connections=max_pool_connections,
                retries={"mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.client: S3Client = client

    # -- helpers -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The endpoint the client talks to (as resolved by botocore)."""
        return str(self.client.meta.endpoint_url)

    def _transfer_config(self) -> TransferConfig:
        config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        # Bound the parts buffered in memory for non-seekable bodies (s3transfer default 10).
        config.max_in_memory_upload_chunks = self.max_concurrency
        return config

    def _fail(self, op: str, key: str, exc: Exception) -> NoReturn:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(exc, ClientError):
            raise StorageError(f"S3 {op} {where} failed: {_describe(exc)}") from exc
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            raise StorageConfigError(
                f"S3 {op} {where} failed: {_one_line(exc)} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or configure an AWS profile)"
            ) from exc
        raise StorageError(f"S3 {op} {where} failed: {_one_line(exc)}") from exc

    # -- Store interface -----------------------------------------------------------------

    def check(self) -> None:
        """``HEAD`` the bucket.

        Raises :class:`BucketNotFoundError` (404 / ``NoSuchBucket``),
        :class:`StorageAuthError` (403, ``AccessDenied``, ``InvalidAccessKeyId``,
        ``SignatureDoesNotMatch``, expired tokens) and :class:`StorageConfigError` for
        anything else (no credentials, unreachable endpoint, wrong region, bad bucket name),
        each with a one-line message naming the bucket and endpoint.
        """
        endpoint = self.endpoint_url
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND_CODES or _status(exc) == 404:
                raise BucketNotFoundError(
                    f"bucket {self.bucket} does not exist at {endpoint}"
                ) from exc
            if code in _AUTH_CODES or _status(exc) == 403:
                raise StorageAuthError(
                    f"access to bucket {self.bucket} at {endpoint} was refused "
                    f"({_describe(exc)}); check the access key, secret key and bucket policy"
                ) from exc
            if code in ("301", "PermanentRedirect", "AuthorizationHeaderMalformed"):
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                actual = headers.get("x-amz-bucket-region")
                hint = f" (the bucket is in {actual})" if actual else ""
                raise StorageConfigError(
                    f"bucket {self.bucket} at {endpoint} is in another region{hint}; set AWS_REGION"
                ) from exc
            raise StorageConfigError(
                f"cannot use bucket {self.bucket} at {endpoint}: {_describe(exc)}"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageConfigError(
                f"no usable S3 credentials for bucket {self.bucket} at {endpoint}: "
                f"{_one_line(exc)} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or "
                "configure an AWS profile)"
            ) from exc
        except EndpointConnectionError as exc:
            raise StorageConfigError(
                f"cannot connect to S3 endpoint {endpoint} (bucket {self.bucket}): {_one_line(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageConfigError(
                f"cannot use bucket {self.bucket} at {endpoint}: {_one_line(exc)}"
            ) from exc

    def put(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Stream ``body`` into ``key`` with ``upload_fileobj``.

        Bodies of at least ``multipart_threshold`` bytes go up as a multipart upload in
        ``multipart_chunksize`` parts, ``max_concurrency`` at a time; memory stays under about
        ``(max_concurrency + 3) x multipart_chunksize`` bytes (module docstring). Sets
        ``ContentType``, ``Metadata`` (names are returned lower-cased by S3; values must be
        ASCII) and ``CacheControl`` (``cache_control`` or the store default).

        If the upload fails the multipart upload is aborted by s3transfer, so no partial
        object appears (S3 only shows an object after ``CompleteMultipartUpload``). An
        exception raised by ``body.read`` propagates unchanged; S3 and transport failures
        raise :class:`StorageError` (:class:`StorageConfigError` when no credentials exist);
        ``ValueError`` for non-ASCII metadata.
        """
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            for name, value in metadata.items():
                if not (name.isascii() and str(value).isascii()):
                    raise ValueError(f"S3 user metadata must be US-ASCII, got {name!r}: {value!r}")
            extra["Metadata"] = {str(k): str(v) for k, v in metadata.items()}
        cc = cache_control if cache_control is not None else self.cache_control
        if cc:
            extra["CacheControl"] = cc
        reader = _FullReader(body)
        try:
            # Read up to one threshold first: a smaller body (the usual image) goes up with
            # one PutObject, skipping the transfer manager and its thread pool per call.
            head = reader.read(self.multipart_threshold)
            if len(head) < self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=head, **extra)
                return
            chained = _Chained(head, reader)
            del head  # the chain owns it now; s3transfer drops it once uploaded
            self.client.upload_fileobj(
                cast(Any, chained),
                self.bucket,
                key,
                ExtraArgs=extra,
                Config=self._transfer_config(),
            )
        except Exception as exc:
            if reader.error is not None and exc is reader.error:
                raise
            if isinstance(exc, (ClientError, BotoCoreError)):
                self._fail("upload to", key, exc)
            if reader.error is not None:
                # s3transfer may surface a follow-up error; the body's own error is the cause.
                raise reader.error  # noqa: B904 - keep the body's own cause chain
            raise

    def head(self, key: str) -> ObjectInfo | None:
        """``HEAD`` the object: size (bytes) from ``ContentLength``, content type, metadata.

        Returns ``None`` on 404. Other failures raise :class:`StorageError`. (On AWS, a
        missing key answers 403 instead of 404 when the caller lacks ``s3:ListBucket``;
        that surfaces as :class:`StorageError`.)
        """
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES or _status(exc) == 404:
                return None
            self._fail("HEAD", key, exc)
        except BotoCoreError as exc:
            self._fail("HEAD", key, exc)
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            content_type=resp.get("ContentType") or None,
            metadata=dict(resp.get("Metadata") or {}),
        )

    def open(self, key: str) -> BinaryIO:
        """``GET`` the object and return botocore's ``StreamingBody`` (has ``read(n)``,
        ``iter_chunks()``, ``close()``; close it when done to free the connection).

        Raises ``FileNotFoundError`` on ``NoSuchKey`` / 404, :class:`StorageError` otherwise.
        """
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES or _status(exc) == 404:
                raise FileNotFoundError(f"no object s3://{self.bucket}/{key}") from exc
            self._fail("GET", key, exc)
        except BotoCoreError as exc:
            self._fail("GET", key, exc)
        return cast(BinaryIO, resp["Body"])

    def object_uri(self, key: str) -> str:
        """``s3://bucket/key`` (the key is not quoted)."""
        return f"s3://{self.bucket}/{key}"

    def url(
        self,
        key: str,
        mode: UrlMode,
        *,
        public_base_url: str | None = None,
        presign_ttl: int = 3600,
    ) -> str:
        """The durable URL of ``key``.

        ``public``: ``{public_base_url}/{quote(key)}`` (``/`` kept; raises
        :class:`ConfigError` without a base URL). ``presigned``: a SigV4 ``GET`` URL from
        ``generate_presigned_url('get_object', ExpiresIn=presign_ttl)``; ``presign_ttl`` is
        in seconds, 1..604800 (SigV4 limit), else :class:`ConfigError`. Signing is local, no
        request is made. ``s3``: :meth:`object_uri`.
        """
        if mode == "public":
            if not public_base_url:
                raise ConfigError("public URLs need a public base URL (CACHELAYER_PUBLIC_BASE_URL)")
            return f"{public_base_url.rstrip('/')}/{quote(key)}"
        if mode == "presigned":
            if not 1 <= presign_ttl <= MAX_PRESIGN_TTL:
                raise ConfigError(
                    f"presign TTL must be 1..{MAX_PRESIGN_TTL} seconds (SigV4 limit), "
                    f"got {presign_ttl}"
                )
            try:
                return str(
                    self.client.generate_presigned_url(
                        "get_object",
                        Params={"Bucket": self.bucket, "Key": key},
                        ExpiresIn=presign_ttl,
                    )
                )
            except (NoCredentialsError, PartialCredentialsError) as exc:
                raise StorageConfigError(
                    f"cannot presign s3://{self.bucket}/{key}: {_one_line(exc)}"
                ) from exc
        if mode == "s3":
            return self.object_uri(key)
        raise ConfigError(f"URL mode must be public, presigned or s3, got {mode!r}")

    def close(self) -> None:
        """Close the client's connection pool (only if this store built the client)."""
        if self._owns_client:
            close: Callable[[], None] | None = getattr(self.client, "close", None)
            if close is not None:
                close()

    def __repr__(self) -> str:
        return f"<S3Store {self.uri} prefix={self.prefix!r}>"
