"""S3-compatible object storage (AWS S3, Cloudflare R2, MinIO, moto, s3rver) through boto3.

A body shorter than ``multipart_threshold`` (64 MiB by default) goes up with one
``PutObject``; a longer one with a multipart upload this module drives itself
(``CreateMultipartUpload``, ``UploadPart`` x N from a bounded thread pool,
``CompleteMultipartUpload``), so it knows the upload id (to abort it, and to name it when a
server refuses the abort), the final ETag and the SHA-256 of the bytes it sent. Why 64 MiB,
how the sha256 is written, failed uploads and memory bounds: :mod:`cachelayer.storage.s3_upload`.

S3 facts this module relies on (AWS S3 "Amazon S3 multipart upload limits" page):

* every part except the last must be at least 5 MiB; a part is at most 5 GiB;
* an upload has at most 10,000 parts, so a stream of unknown length can grow to at most
  ``10,000 x multipart_chunksize`` bytes (80,000 MiB, about 78 GiB, with the 8 MiB default);
* an object written by a single PUT, or copied by one ``CopyObject``, is at most 5 GiB.

SigV4 presigned URLs are valid for at most 604,800 seconds (seven days) (AWS S3
"Sharing objects with presigned URLs"). User metadata travels as ``x-amz-meta-*`` HTTP
headers: S3 returns the names lower-cased, values must be US-ASCII, and all user metadata
together must stay under 2 KB (AWS S3 "Working with object metadata"); so values are
percent-encoded and fitted into 2 KB (:func:`cachelayer.storage.base.encode_metadata`).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from cachelayer.config import MAX_PRESIGN_TTL
from cachelayer.errors import (
    BucketNotFoundError,
    ConfigError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
)
from cachelayer.retry_policy import S3 as S3_RETRY
from cachelayer.storage.base import ObjectInfo, Store, decode_metadata, encode_metadata
from cachelayer.storage.s3_upload import (
    MAX_COPY_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    ChainReader,
    FullReader,
    IncompleteUpload,
    abort_upload,
    list_incomplete_uploads,
    put_multipart,
    put_single,
    put_spooled,
    skip_payload_hash_when_checksummed,
)
from cachelayer.storage.s3_upload import describe as _describe
from cachelayer.storage.s3_upload import error_code as _error_code
from cachelayer.storage.s3_upload import http_status as _status
from cachelayer.storage.s3_upload import one_line as _one_line
from cachelayer.storage.spool import SpoolReservation, reserve_spool

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "S3Store",
    "IncompleteUpload",
    "MIN_PART_SIZE",
    "MAX_PART_SIZE",
    "MAX_PARTS",
    "DEFAULT_CHECKSUM_COPY_MAX",
    "DEFAULT_MULTIPART_THRESHOLD",
    "MAX_COPY_SIZE",
    "MAX_DELETE_KEYS",
    "MAX_PRESIGN_TTL",
]

log = logging.getLogger("cachelayer")

MiB = 1024 * 1024
#: Keys one ``DeleteObjects`` call takes at most (AWS S3 API reference, ``DeleteObjects``).
MAX_DELETE_KEYS = 1000

AddressingStyle = Literal["auto", "path", "virtual"]

#: Bytes of user metadata ``sha256`` (its name and 64 hex digits), added after encoding.
_SHA256_METADATA_BYTES = len("sha256") + 64
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


#: Default ``multipart_threshold``: bodies shorter than 64 MiB go up with one ``PutObject``
#: (spooled to a temporary file past ``spool_memory_bytes``); see :mod:`~cachelayer.storage.s3_upload`.
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB

#: Default ``checksum_copy_max_bytes``: multipart objects up to 64 MiB get metadata
#: ``sha256`` by a server-side copy; larger ones skip that second full write (``s3_upload``).
DEFAULT_CHECKSUM_COPY_MAX = 64 * MiB


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
    multipart upload, smaller ones one ``PutObject``; default 64 MiB, at most 5 GiB),
    ``spool_memory_bytes`` (a body under the threshold is held in memory up to this size,
    default 8 MiB, and past it spooled to a temporary file in ``spool_dir``, default the
    system's temporary directory, so a single ``PutObject`` holds about this much in
    memory whatever the body's size), ``multipart_chunksize`` (part size; S3 needs 5 MiB..5 GiB, so values
    outside raise ``ValueError``), ``max_concurrency`` (parts in flight per ``put``, which
    also bounds parts buffered in memory, see ``s3_upload``'s docstring; the default 3 keeps a
    500 MiB persist under 150 MiB peak RSS, docs/BENCHMARKS.md),
    ``max_pool_connections`` (HTTP connections of the shared client; size it at least
    ``max_concurrency x`` concurrent puts). ``cache_control``: default ``Cache-Control``
    for :meth:`put`. ``checksum_copy_max_bytes``: multipart objects up to this size (bytes,
    default 64 MiB, at most 5 GiB; ``0`` never) get their ``sha256`` metadata through a
    server-side ``CopyObject`` after the upload (``s3_upload``'s docstring). ``client``: a
    ready boto3 S3 client to use instead of building one (then the connection arguments are
    ignored and :meth:`close` leaves it open).

    Checksums: botocore >= 1.36 adds a CRC32 checksum to uploads by default, and this store
    sends ``ChecksumSHA256``; for a service that rejects checksum headers, set
    ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (read by botocore itself; Cloudflare
    documents this workaround for its R2 examples): then neither is sent, and the ``sha256``
    user metadata is still written.

    One boto3 client is built here and shared by all threads (boto3 clients are
    thread-safe, sessions are not). Raises :class:`ConfigError` for a bad
    ``addressing_style``, :class:`StorageConfigError` when boto3 cannot build a client from
    its own settings (unknown ``AWS_PROFILE``, malformed endpoint or region) and
    ``ValueError`` for out-of-range sizes.
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
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = 8 * MiB,
        spool_memory_bytes: int = 8 * MiB,
        spool_dir: str | None = None,
        max_concurrency: int = 3,
        max_pool_connections: int = 32,
        cache_control: str | None = None,
        checksum_copy_max_bytes: int = DEFAULT_CHECKSUM_COPY_MAX,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3 bucket name is empty")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(f"S3 addressing style must be auto, path or virtual, got {addressing_style!r}")
        if not MIN_PART_SIZE <= multipart_chunksize <= MAX_PART_SIZE:
            raise ValueError(
                f"multipart_chunksize must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} "
                f"bytes (S3 part size limits), got {multipart_chunksize}"
            )
        if not 1 <= multipart_threshold <= MAX_COPY_SIZE:
            raise ValueError(
                f"multipart_threshold must be 1..{MAX_COPY_SIZE} bytes (one PutObject writes at "
                f"most 5 GiB), got {multipart_threshold}"
            )
        if spool_memory_bytes < 1:
            raise ValueError(f"spool_memory_bytes must be positive, got {spool_memory_bytes}")
        if max_concurrency < 1 or max_pool_connections < 1:
            raise ValueError("max_concurrency and max_pool_connections must be at least 1")
        if not 0 <= checksum_copy_max_bytes <= MAX_COPY_SIZE:
            raise ValueError(
                f"checksum_copy_max_bytes must be 0..{MAX_COPY_SIZE}, got {checksum_copy_max_bytes}"
            )

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}"
        self.cache_control = cache_control
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.spool_memory_bytes = spool_memory_bytes
        self.spool_dir = spool_dir
        self.max_concurrency = max_concurrency
        self.checksum_copy_max_bytes = checksum_copy_max_bytes
        self._owns_client = client is None
        if client is None:
            try:
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
                    connect_timeout=10,
                    read_timeout=60,
                ).merge(S3_RETRY.to_botocore_config())
                client = session.client("s3", endpoint_url=endpoint_url, config=config)
                skip_payload_hash_when_checksummed(client)
            except (BotoCoreError, ValueError) as exc:
                # boto3's own settings: a mistyped AWS_PROFILE, a bad AWS_ENDPOINT_URL_S3,
                # AWS_REGION or AWS_MAX_ATTEMPTS, an unreadable AWS config file...
                raise StorageConfigError(
                    f"cannot use S3 for bucket {bucket}: {_one_line(exc)} (check the AWS_* settings)"
                ) from exc
        self.client: S3Client = client

    # -- helpers -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The endpoint the client talks to (as resolved by botocore)."""
        return str(self.client.meta.endpoint_url)

    @property
    def _send_checksums(self) -> bool:
        """Whether to send ``x-amz-checksum-sha256`` (not when botocore is told
        ``when_required``, the setting for services that reject checksum headers)."""
        return getattr(self.client.meta.config, "request_checksum_calculation", None) != "when_required"

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
                raise BucketNotFoundError(f"bucket {self.bucket} does not exist at {endpoint}") from exc
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
        size: int | None = None,
    ) -> str:
        """Stream ``body`` into ``key``, with the SHA-256 of its bytes as metadata ``sha256``;
        returns that SHA-256 (hex).

        Bodies shorter than ``multipart_threshold`` go up with one ``PutObject`` (also
        carrying ``ChecksumSHA256``): held in memory up to ``spool_memory_bytes``, past that
        spooled to an anonymous temporary file in ``spool_dir`` (the system's temporary
        directory by default) while they are read. ``size`` (bytes, e.g. the source's
        ``Content-Length``) is a hint: a body announced at ``multipart_threshold`` or more
        starts its multipart upload at once instead of being spooled first; so does any body
        whose spool space cannot be reserved (``storage.spool.SpoolLedger``: free space minus
        what concurrent uploads booked). Longer
        bodies go as a multipart upload in
        ``multipart_chunksize`` parts, ``max_concurrency`` at a time, each with its
        ``ChecksumSHA256``, then ``sha256`` is added by a server-side copy (objects up to
        ``checksum_copy_max_bytes``; ``s3_upload``'s docstring). Memory stays near
        ``(max_concurrency + 2) x multipart_chunksize`` bytes. Sets ``ContentType``,
        ``Metadata`` (names are returned lower-cased by S3; values of any text,
        percent-encoded by :func:`~cachelayer.storage.base.encode_metadata` and decoded by
        :meth:`head`; a ``sha256`` passed in is replaced by the hash of the bytes sent) and
        ``CacheControl`` (``cache_control`` or the store default).

        If the upload fails, the multipart upload is aborted, so no partial object appears
        (S3 only shows an object after ``CompleteMultipartUpload``); a server that refuses
        the abort gets one warning naming the upload id. An exception raised by
        ``body.read`` propagates unchanged; S3 and transport failures raise
        :class:`StorageError` (:class:`StorageConfigError` when no credentials exist);
        ``ValueError`` for a metadata name outside ``[a-z0-9-]``.
        """
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            # any text: values percent-encoded, all of it within 2 KB with room for sha256
            extra["Metadata"] = encode_metadata(metadata, reserve=_SHA256_METADATA_BYTES)
        cc = cache_control if cache_control is not None else self.cache_control
        if cc:
            extra["CacheControl"] = cc
        reader = FullReader(body)
        spool: SpoolReservation | None = None
        try:
            # Up to spool_memory_bytes in memory first: a smaller body (the usual image)
            # goes up with one PutObject from memory, its sha256 known before it is sent.
            first = min(self.multipart_threshold, self.spool_memory_bytes)
            head = reader.read(first)
            if len(head) < first:
                return put_single(
                    self.client, self.bucket, key, head, extra, send_checksums=self._send_checksums
                )
            rest = reader
            spool = reserve_spool(len(head), size, self.multipart_threshold, self.spool_dir)
            if spool is not None:
                sha256 = put_spooled(
                    self.client,
                    self.bucket,
                    key,
                    head,
                    reader,
                    extra,
                    spool=spool,
                    send_checksums=self._send_checksums,
                )
                if sha256 is not None:
                    return sha256
                # the body reached its reservation: the spooled bytes become the first parts
                head, rest = b"", FullReader(cast(BinaryIO, ChainReader(cast(BinaryIO, spool.file), reader)))
            return put_multipart(
                self.client,
                self.bucket,
                key,
                head,
                rest,
                extra,
                chunksize=self.multipart_chunksize,
                max_concurrency=self.max_concurrency,
                send_checksums=self._send_checksums,
                copy_max_bytes=self.checksum_copy_max_bytes,
            )
        except Exception as exc:
            if reader.error is not None and exc is reader.error:
                raise
            if isinstance(exc, (ClientError, BotoCoreError)):
                self._fail("upload to", key, exc)
            if reader.error is not None:
                # a follow-up error (e.g. from a part thread); the body's own error is the cause
                raise reader.error  # noqa: B904 - keep the body's own cause chain
            raise
        finally:
            if spool is not None:
                spool.close()

    def head(self, key: str) -> ObjectInfo | None:
        """``HEAD`` the object: size (bytes) from ``ContentLength``, content type, metadata
        (values decoded: :func:`~cachelayer.storage.base.decode_metadata`), and ``sha256``
        (hex): metadata ``sha256``, else a ``ChecksumSHA256`` the server marks
        ``FULL_OBJECT`` (``x-amz-checksum-type``; a composite multipart checksum is not the
        object's hash), else ``None``.

        Returns ``None`` on 404. Other failures raise :class:`StorageError`. (On AWS, a
        missing key answers 403 instead of 404 when the caller lacks ``s3:ListBucket``;
        that surfaces as :class:`StorageError`.)
        """
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES or _status(exc) == 404:
                return None
            self._fail("HEAD", key, exc)
        except BotoCoreError as exc:
            self._fail("HEAD", key, exc)
        metadata = decode_metadata(resp.get("Metadata") or {})
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            content_type=resp.get("ContentType") or None,
            metadata=metadata,
            sha256=_stored_sha256(metadata, resp),
            etag=resp.get("ETag") or None,
            cache_control=resp.get("CacheControl") or None,
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

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """``GET`` with ``Range: bytes=start-end`` (``end`` inclusive; ``None``: to the end)
        and return the ``StreamingBody``; close it when done. Errors as :meth:`open`;
        ``ValueError`` for a bad range."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        if start == 0 and end is None:
            return self.open(key)
        try:
            resp = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{'' if end is None else end}"
            )
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

    can_presign = True

    def presign(self, key: str, ttl: int) -> str:
        """A SigV4 ``GET`` URL of ``key`` from ``generate_presigned_url('get_object',
        ExpiresIn=ttl)``; ``ttl`` in seconds, 1..604800 (the SigV4 limit), else
        :class:`ConfigError`. Signing is local, no request is made. Raises
        :class:`StorageConfigError` when boto3 cannot sign (no credentials, bad endpoint)."""
        if not 1 <= ttl <= MAX_PRESIGN_TTL:
            raise ConfigError(f"presign TTL must be 1..{MAX_PRESIGN_TTL} seconds (SigV4 limit), got {ttl}")
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl
                )
            )
        except (BotoCoreError, ValueError) as exc:  # no credentials, bad endpoint...
            raise StorageConfigError(f"cannot presign s3://{self.bucket}/{key}: {_one_line(exc)}") from exc

    def delete(self, keys: Iterable[str]) -> None:
        """``DeleteObjects`` (quiet) for up to :data:`MAX_DELETE_KEYS` keys a call, in as
        many calls as the keys need (duplicates sent once). S3 answers success for a key
        with no object, so deleting twice is fine. Keys a call reports as not deleted, or a
        call that fails, raise :class:`StorageError` naming the first few, after every call
        was made (AWS S3 API reference, ``DeleteObjects``: "up to 1,000 keys")."""
        unique = list(dict.fromkeys(keys))
        failed: list[str] = []
        last: Exception | None = None
        for i in range(0, len(unique), MAX_DELETE_KEYS):
            batch = unique[i : i + MAX_DELETE_KEYS]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except (BotoCoreError, ClientError) as exc:
                failed.extend(batch)
                last = exc
                continue
            failed.extend(f"{e.get('Key')} ({e.get('Code')})" for e in resp.get("Errors", []))
        if failed:
            reason = f": {_one_line(last)}" if last is not None else ""
            shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
            raise StorageError(f"cannot delete from s3://{self.bucket}: {shown}{reason}")

    def list_keys(self, prefix: str) -> Iterator[str]:
        """``ListObjectsV2`` pages (1,000 keys each, AWS S3 API reference) of ``prefix``, all
        followed. Raises :class:`StorageError` when the bucket cannot be listed."""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {_one_line(exc)}") from exc

    def cleanup_incomplete_uploads(
        self, older_than_seconds: float = 86400, *, dry_run: bool = False
    ) -> list[IncompleteUpload]:
        """Abort the multipart uploads under :attr:`prefix` started more than
        ``older_than_seconds`` seconds ago (default one day, as the lifecycle rule in the
        README) and never completed: a crash, or a server that refused the abort, leaves
        them, invisible but billed. Returns the uploads aborted (with ``dry_run``, those that
        would be; nothing is changed). An upload the server will not abort is logged and
        left out. The prefix is matched as a key prefix (``replicate/`` for ``replicate``).

        Raises ``ValueError`` for a negative age and :class:`StorageError` when the server
        cannot list uploads (s3rver answers 501 ``NotImplemented``; use a lifecycle rule or
        remove its data directory there) or refuses access.
        """
        if older_than_seconds < 0:
            raise ValueError(f"older_than_seconds must be >= 0, got {older_than_seconds}")
        prefix = f"{self.prefix}/" if self.prefix else ""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
        try:
            stale = [
                up
                for up in list_incomplete_uploads(self.client, self.bucket, prefix)
                if up.initiated is None or up.initiated <= cutoff
            ]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"cannot list incomplete multipart uploads of s3://{self.bucket}/{prefix}: {_one_line(exc)}"
            ) from exc
        if dry_run:
            return stale
        return [up for up in stale if abort_upload(self.client, self.bucket, up.key, up.upload_id)]

    def close(self) -> None:
        """Close the client's connection pool (only if this store built the client)."""
        if self._owns_client:
            close: Callable[[], None] | None = getattr(self.client, "close", None)
            if close is not None:
                close()

    def __repr__(self) -> str:
        return f"<S3Store {self.uri} prefix={self.prefix!r}>"


def _stored_sha256(metadata: dict[str, str], resp: Any) -> str | None:
    """Metadata ``sha256`` if it is 64 hex digits, else a full-object ``ChecksumSHA256``."""
    value = metadata.get("sha256", "").strip().lower()
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    checksum = resp.get("ChecksumSHA256")
    if checksum and resp.get("ChecksumType") == "FULL_OBJECT":
        try:
            raw = base64.b64decode(checksum, validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw.hex() if len(raw) == 32 else None
    return None
