"""The upload side of :class:`~cachelayer.storage.s3.S3Store`: one ``PutObject`` for small
bodies, a multipart upload driven here for the others, the sha256 written with the object,
aborts that never pass silently, and the listing of incomplete uploads for clean-up.

The limits used here come from the AWS S3 "Amazon S3 multipart upload limits" and "Copy an
object" pages (listed in the :mod:`cachelayer.storage.s3` module docstring).

**Why 64 MiB.** Below it one ``PutObject`` is the cheaper write: the object is created with
its metadata ``sha256`` in one request, where a multipart upload needs the ``CopyObject``
described below (a second full write of the object, and a second version on a versioned
bucket) and its ``CompleteMultipartUpload`` joins the parts (moto re-writes every byte).
On moto a 50 MiB persist took 0.82-0.92 s as multipart and 0.49-0.57 s as one ``PutObject``
(the naive loop: 0.52-0.58 s; docs/BENCHMARKS.md, issue 11). rclone's S3 ``upload_cutoff`` (200 MiB) makes
the same choice; AWS suggests multipart "when your object size reaches 100 MB". A body past
``spool_memory_bytes`` (8 MiB) is written to an anonymous temporary file while it is read,
so memory stays bounded whatever the body (its space is reserved first in the process-wide
ledger of :mod:`cachelayer.storage.spool`; a body that does not fit goes multipart, unspooled);
the file is seekable, so botocore signs the
payload and can retry the ``PutObject``. What it gives up: the download and the upload no
longer overlap for such a body (the naive loop does not overlap them either).

**The sha256 written with each object.** User metadata can only be set when an object is
created, before a streamed body has been read, and S3 has no full-object SHA-256 for
multipart uploads (full-object checksums exist only for the CRC algorithms; AWS S3
"Checking object integrity"). So: a single ``PutObject`` (the body is in memory or spooled)
carries metadata ``sha256`` (hex) and ``ChecksumSHA256`` (base64; AWS rejects the upload if
the bytes do not match). A multipart upload sends ``ChecksumSHA256`` with every part (S3
checks each part and keeps a composite checksum), and after ``CompleteMultipartUpload`` the
object is copied onto itself (``CopyObject``, ``MetadataDirective=REPLACE``,
``CopySourceIfMatch`` = the new ETag, so an object replaced meanwhile is left alone) to add
metadata ``sha256``: a server-side copy, no bytes through this process, done for objects up
to ``checksum_copy_max_bytes`` (default 64 MiB, ``DEFAULT_CHECKSUM_COPY_MAX``; at most
5 GiB, the ``CopyObject`` limit). The copy is not free: on moto a 500 MiB persist took
13.3 s with it and 7.9 s without (naive loop 7.9 s; docs/BENCHMARKS.md, issue 11), and S3
copies server-side at a rate of its own, so larger objects skip it: their sha256 stays in
the catalog, S3 checked every part's ``ChecksumSHA256`` on upload, and ``verify --deep``
re-reads them (shallow ``verify`` compares their size). On a
versioned bucket that copy is a second version. The copy also leaves the object an MD5 ETag
(objects written by PUT or Copy, plaintext or SSE-S3, have MD5 ETags; multipart ones do not:
AWS S3 API reference, ``Object.ETag``), so tools such as rclone can compare MD5s without
downloading. If the copy fails the object stays, complete,
without the metadata, and a warning says so. :meth:`S3Store.head` reports metadata
``sha256``, else a ``ChecksumSHA256`` the server marks ``FULL_OBJECT``. Checksum headers are
not sent when botocore is told ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (for
services that reject them); the metadata is written either way.

**Failed uploads.** Any failure during a multipart upload (the body's ``read`` raising, a
part refused, the process interrupted) waits for the parts in flight, then aborts the upload.
Some servers refuse the abort (s3rver 3.7.1 answers 405): then one warning names the upload
id, and the parts stay until a bucket lifecycle rule (``AbortIncompleteMultipartUpload``)
or :meth:`S3Store.cleanup_incomplete_uploads` removes them.

**Memory.** One ``put`` holds at most ``max_concurrency`` parts being uploaded, the part being
read, one part whose upload has just finished (until its pool thread lets go of it) and
botocore's buffers: about ``(max_concurrency + 2) x multipart_chunksize`` bytes (40 MiB with
the defaults; 15.4 to 23.3 MiB measured with tracemalloc for 2 x 5 MiB) whatever the object
size; a single ``PutObject`` about
``spool_memory_bytes`` (the bytes read before spooling starts, plus one read).
:class:`FullReader` loops until ``n`` bytes or end of stream, since a raw stream (socket,
HTTP response) may return fewer bytes than asked, which would otherwise make parts smaller
than the 5 MiB S3 requires; the pieces are copied into one buffer as they arrive, so a part
never exists twice.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cachelayer.errors import StorageError
from cachelayer.storage.spool import SPOOL_CHUNK, SpoolReservation

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MAX_COPY_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "FullReader",
    "IncompleteUpload",
    "abort_upload",
    "list_incomplete_uploads",
    "ChainReader",
    "put_multipart",
    "put_single",
    "put_spooled",
    "skip_payload_hash_when_checksummed",
]

log = logging.getLogger("cachelayer")

MiB = 1024 * 1024
#: Smallest part S3 accepts, except the last one (AWS S3 multipart upload limits).
MIN_PART_SIZE = 5 * MiB
#: Largest part S3 accepts (AWS S3 multipart upload limits).
MAX_PART_SIZE = 5 * 1024 * MiB
#: Most parts in one multipart upload (AWS S3 multipart upload limits).
MAX_PARTS = 10_000
#: Largest object one ``CopyObject`` (or one ``PutObject``) can write (AWS S3 "Copy an object").
MAX_COPY_SIZE = 5 * 1024 * MiB


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def describe(exc: ClientError) -> str:
    """``Code (HTTP 403): message`` on one line."""
    code = error_code(exc) or "error"
    status = http_status(exc)
    message = str(exc.response.get("Error", {}).get("Message", "") or "").strip()
    text = f"{code} (HTTP {status})" if status is not None and str(status) != code else code
    if message and message != code:
        text += f": {message}"
    return " ".join(text.split())


def one_line(exc: BaseException) -> str:
    """``exc`` on one line: a :class:`ClientError` as :func:`describe`, others as ``str``."""
    if isinstance(exc, ClientError):
        return describe(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def b64_sha256(data: bytes) -> str:
    """The base64 SHA-256 of ``data``, as ``x-amz-checksum-sha256`` carries it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


#: Most bytes :class:`FullReader` asks its body for in one ``read``.
READ_PIECE = 1024 * 1024


class FullReader:
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
        with self._lock:
            try:
                data = self._read_all() if size is None or size < 0 else self._read_exact(size)
            except BaseException as exc:
                self.error = exc
                raise
            self.bytes_read += len(data)
            return data

    def _read_exact(self, size: int) -> bytes:
        """``size`` bytes (fewer only at the end of the stream). Short reads are appended to
        one growing ``bytearray`` (which boto3 sends as it does ``bytes``), so a part never
        exists twice in memory, as it would if the pieces were kept in a list and joined,
        and a small body costs no more than its own size (a buffer of ``size`` allocated up
        front would cost an 8 MiB allocation for every 100 kB image)."""
        first = self._body.read(min(size, READ_PIECE))
        if not first or len(first) >= size:
            return first
        buf = bytearray(first)
        del first
        while len(buf) < size:
            chunk = self._body.read(min(size - len(buf), READ_PIECE))
            if not chunk:
                break
            buf += chunk
        return buf  # type: ignore[return-value]  # a bytearray is used as bytes throughout

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self._body.read(MIN_PART_SIZE)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _parts(head: bytes, reader: FullReader, size: int) -> Iterator[bytes]:
    """``head`` then the rest of ``reader`` in parts of exactly ``size`` bytes (the last may
    be shorter); never holds more than one part plus ``head``. A buffer of exactly one part
    is handed out as is (slicing a ``bytearray`` would copy it), and ``head`` is not kept
    alive by this generator once it has been handed out."""
    buf = head
    del head
    while True:
        while len(buf) >= size:
            if len(buf) == size:
                part, buf = buf, b""
            else:
                part, buf = buf[:size], buf[size:]
            yield part
            del part
        more = reader.read(size - len(buf))
        if not more:
            if buf:
                yield buf
            return
        buf = more if not buf else buf + more


def _put_args(extra: dict[str, Any], digest: Any, send_checksums: bool) -> dict[str, Any]:
    """``extra`` plus metadata ``sha256`` (hex) and, with ``send_checksums``,
    ``ChecksumSHA256`` (base64) from the finished ``hashlib.sha256`` object ``digest``."""
    args = dict(extra, Metadata={**extra.get("Metadata", {}), "sha256": digest.hexdigest()})
    if send_checksums:
        args["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode("ascii")
    return args


def put_single(
    client: S3Client, bucket: str, key: str, data: bytes, extra: dict[str, Any], *, send_checksums: bool
) -> str:
    """One ``PutObject`` of ``data`` with metadata ``sha256`` (hex) and, with
    ``send_checksums``, ``ChecksumSHA256`` (S3 refuses the body if it does not match).
    Returns the hex SHA-256. Raises botocore's errors."""
    digest = hashlib.sha256(data)
    client.put_object(Bucket=bucket, Key=key, Body=data, **_put_args(extra, digest, send_checksums))
    return digest.hexdigest()


def skip_payload_hash_when_checksummed(client: S3Client) -> None:
    """Make ``client`` sign ``UNSIGNED-PAYLOAD`` instead of the SHA-256 of the body for a
    request sent over HTTPS that carries ``x-amz-checksum-sha256`` (this module's
    ``PutObject`` and ``UploadPart``).

    botocore skips the payload hash over HTTPS only when it computed the checksum itself
    or finds ``Content-MD5``: it does not look for a checksum the caller sent
    (``botocore.auth.S3SigV4Auth._should_sha256_sign_payload``), so every body went
    through SHA-256 twice, 0.6 ms per MiB here (docs/BENCHMARKS.md, issue 11, session 6).
    Such a body is covered twice over without it: TLS protects it in transit, and the
    signed checksum header lets S3 refuse a body that does not match (AWS S3 "Checking
    object integrity"). Over plain HTTP the payload stays signed, as every AWS SDK keeps
    it: a server that ignores checksum headers (moto does) would otherwise have nothing to
    check the body against. Requests without the header are signed as before. The switch
    is botocore's own ``s3.payload_signing_enabled`` setting, given to the one request
    through its signing context.
    """
    base = client.meta.config
    s3: Any = {**(getattr(base, "s3", None) or {}), "payload_signing_enabled": False}
    unsigned = base.merge(Config(s3=s3))

    def before_sign(request: Any, **_: Any) -> None:
        if request.url.startswith("https://") and "x-amz-checksum-sha256" in request.headers:
            request.context["client_config"] = unsigned

    client.meta.events.register("before-sign.s3", before_sign)


def put_spooled(
    client: S3Client,
    bucket: str,
    key: str,
    head: bytes,
    reader: FullReader,
    extra: dict[str, Any],
    *,
    spool: SpoolReservation,
    send_checksums: bool,
) -> str | None:
    """Write ``head`` and then ``reader`` into ``spool``'s empty temporary file (opened
    here; hashing as it goes) until the stream ends or ``spool.nbytes`` bytes are spooled.

    When the stream ended first (fewer than ``spool.nbytes`` bytes in all), uploads the file
    with one ``PutObject`` carrying metadata ``sha256`` and ``ChecksumSHA256``, as
    :func:`put_single` does (the file is seekable, so botocore can sign and retry it), and
    returns the hex SHA-256. Otherwise returns ``None`` with ``spool.file`` rewound to its
    start holding exactly ``spool.nbytes`` bytes: the caller continues with a multipart
    upload of the spool followed by the rest of ``reader`` (:class:`ChainReader`). Raises
    :class:`StorageError` when the spool cannot be written, botocore's errors for the upload
    and the body's own errors unchanged.
    """
    where = f"s3://{bucket}/{key}"
    file = spool.open(where)
    digest = hashlib.sha256(head)
    spool.write(head, where)
    size, limit = len(head), spool.nbytes
    del head
    while size < limit:
        chunk = reader.read(min(SPOOL_CHUNK, limit - size))
        if not chunk:
            file.seek(0)
            args = _put_args(extra, digest, send_checksums)
            client.put_object(Bucket=bucket, Key=key, Body=file, ContentLength=size, **args)
            return digest.hexdigest()
        spool.write(chunk, where)
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return None


class ChainReader:
    """``first`` read to its end, then ``then``: a readable stream for :class:`FullReader`
    (only ``read(n)`` is used)."""

    def __init__(self, first: BinaryIO, then: FullReader) -> None:
        self._first: BinaryIO | None = first
        self._then = then

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._first is not None:
            data = self._first.read(size)
            if data:
                return data
            self._first = None
        return self._then.read(size)


def put_multipart(
    client: S3Client,
    bucket: str,
    key: str,
    head: bytes,
    reader: FullReader,
    extra: dict[str, Any],
    *,
    chunksize: int,
    max_concurrency: int,
    send_checksums: bool,
    copy_max_bytes: int,
) -> str:
    """Upload ``head`` + the rest of ``reader`` as one multipart upload, then add metadata
    ``sha256`` with a ``CopyObject`` onto itself when the object is at most
    ``copy_max_bytes`` bytes.

    At most ``max_concurrency`` parts are in flight (and in memory) while the next one is
    read. Returns the hex SHA-256 of the bytes sent. On any failure, the parts in flight are
    awaited and the upload is aborted (:func:`abort_upload`) before the exception propagates
    unchanged. Raises :class:`StorageError` past :data:`MAX_PARTS` parts, botocore's errors
    otherwise.
    """
    create = dict(extra)
    if send_checksums:
        create["ChecksumAlgorithm"] = "SHA256"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    digest = hashlib.sha256()
    size = 0
    parts: list[dict[str, Any]] = []

    def send(number: int, data: bytes) -> dict[str, Any]:
        args: dict[str, Any] = {"ChecksumSHA256": b64_sha256(data)} if send_checksums else {}
        resp = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **args
        )
        return {"PartNumber": number, "ETag": resp["ETag"], **args}

    pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="cachelayer-s3-part")
    try:
        pending: set[Future[dict[str, Any]]] = set()
        for number, data in enumerate(_parts(head, reader, chunksize), start=1):
            if number == 1:
                del head  # the generator hands it out as the first part(s)
            if number > MAX_PARTS:
                raise StorageError(
                    f"S3 upload to s3://{bucket}/{key} failed: the body is longer than {MAX_PARTS} "
                    f"parts of {chunksize} bytes (raise multipart_chunksize)"
                )
            digest.update(data)
            size += len(data)
            pending.add(pool.submit(send, number, data))
            del data
            if len(pending) >= max_concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                parts.extend(f.result() for f in done)
        parts.extend(f.result() for f in pending)
        parts.sort(key=lambda p: int(p["PartNumber"]))
        done_resp = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        abort_upload(client, bucket, key, upload_id)
        raise
    pool.shutdown(wait=True)
    if size <= min(copy_max_bytes, MAX_COPY_SIZE):
        _add_sha256(client, bucket, key, digest.hexdigest(), done_resp.get("ETag"), extra, send_checksums)
    return digest.hexdigest()


def _add_sha256(
    client: S3Client,
    bucket: str,
    key: str,
    sha256: str,
    etag: str | None,
    extra: dict[str, Any],
    send_checksums: bool,
) -> None:
    """Copy ``key`` onto itself with metadata ``sha256`` added (``MetadataDirective=REPLACE``
    restates content type, cache control and metadata; ``CopySourceIfMatch`` keeps an object
    replaced meanwhile untouched). A failure only logs a warning: the object is complete."""
    args = dict(extra, Metadata={**extra.get("Metadata", {}), "sha256": sha256})
    if etag:
        args["CopySourceIfMatch"] = etag
    if send_checksums:
        args["ChecksumAlgorithm"] = "SHA256"
    try:
        client.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            MetadataDirective="REPLACE",
            **args,
        )
    except (ClientError, BotoCoreError) as exc:
        log.warning(
            "s3://%s/%s is stored but its sha256 metadata could not be added (%s); "
            "verify will check its size only unless --deep",
            bucket,
            key,
            one_line(exc),
        )


def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    """``AbortMultipartUpload``; ``True`` when the upload is gone (aborted, or already
    unknown to the server). When the server refuses (s3rver answers 405), logs one warning
    naming the upload id and the clean-up (a lifecycle rule, or
    :meth:`S3Store.cleanup_incomplete_uploads`) and returns ``False``. Never raises."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        return True
    except ClientError as exc:
        if error_code(exc) == "NoSuchUpload":
            return True
        reason = describe(exc)
    except BotoCoreError as exc:
        reason = one_line(exc)
    log.warning(
        "could not abort multipart upload %s of s3://%s/%s (%s): its parts stay in the bucket, "
        "billed as storage, until a lifecycle rule (AbortIncompleteMultipartUpload) or "
        "S3Store.cleanup_incomplete_uploads() removes them",
        upload_id,
        bucket,
        key,
        reason,
    )
    return False


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and never completed nor aborted: its ``key``,
    ``upload_id`` and ``initiated`` time (timezone-aware, as the server reports it)."""

    key: str
    upload_id: str
    initiated: datetime | None


def list_incomplete_uploads(client: S3Client, bucket: str, prefix: str) -> Iterator[IncompleteUpload]:
    """Every incomplete multipart upload whose key starts with ``prefix``
    (``ListMultipartUploads``, all pages). Raises botocore's errors (s3rver answers 501
    ``NotImplemented``)."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            initiated = up.get("Initiated")
            yield IncompleteUpload(str(up.get("Key", "")), str(up.get("UploadId", "")), initiated)
